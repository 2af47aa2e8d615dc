# Guest half of the frozen-host test (run by scripts/vm-run.sh --net; the
# host half is target/debug/vmlock-vm-watchdog, which starts it):
#
#   scripts/vm-run.sh --net scripts/vm/watchdog-test.sh ETCD_URL DISK together|late [TTL]
#
# The guest is host A: softdog, vmlockd on the etcd back end outside the
# guest, vmlock-fenced petting /dev/watchdog, a VM-like holder of NAME. Once
# everything runs (DISK, a file in the guest's own /tmp, is locked in the
# default lockspace, as libvirt's direct leases are) it freezes vmlockd and
# the helper (SIGSTOP) and prints a heartbeat until the kernel watchdog
# resets the guest. `together`: both at once (the helper's pets stop at
# once). `late`: vmlockd first, the helper only once it withholds its pets
# (the deadline is near): the last pet is then as late as the rule allows,
# the latest reset a frozen host can have (QEMU exits:
# -no-reboot). Lines for the host driver start with "WD "; guest times are
# CLOCK_BOOTTIME seconds (/proc/uptime).
set -u
url=$1 name=$2 mode=$3 ttl=${4:-}
bin=$PWD/target/debug
up() { read -r u _ < /proc/uptime; echo "$u"; }
ok() { echo "WD check ok: $*"; }
bad() { echo "WD check FAIL: $*"; }
give_up() { bad "$*"; echo "WD end $(up) no reset"; exit 1; }

# softdog needs the watchdog core (a module in Debian's kernel).
mods=$PWD/target/vm/kernel/lib/modules/$(uname -r)/kernel/drivers/watchdog
insmod "$mods/watchdog.ko" && insmod "$mods/softdog.ko" || give_up "cannot load softdog from $mods"
[ -c /dev/watchdog ] && ok "softdog loaded, /dev/watchdog present" || give_up "no /dev/watchdog"

mkdir -p /tmp/wd
conf=/tmp/wd/a.conf
{
  echo 'lock_backend = "etcd"'
  echo "etcd_endpoints = [ \"$url\" ]"
  echo 'etcd_prefix = "/vmlock-vm-watchdog"'
  echo 'host_id = "A"'
  [ -n "$ttl" ] && echo "lease_ttl = $ttl"
  echo 'etcd_state_file = "/tmp/wd/A.json"'
  echo 'watchdog_device = "/dev/watchdog"'
} > "$conf"
"$bin/vmlockd" -f "$conf" > /tmp/wd/vmlockd.log 2>&1 &
daemon=$!
i=0
until "$bin/vmlockctl" status > /dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 600 ] || { cat /tmp/wd/vmlockd.log; give_up "vmlockd did not start"; }
  kill -0 $daemon 2> /dev/null || { cat /tmp/wd/vmlockd.log; give_up "vmlockd exited"; }
  sleep 0.2
done
ok "vmlockd $daemon serving on the etcd back end at $url"

mkfifo /tmp/wd/hold.in
mkdir -p "$(dirname "$name")" && touch "$name"
"$bin/vmlock-hold" --register /run/libvirt/virtlockd-sock "" "$name" \
  < /tmp/wd/hold.in > /tmp/wd/hold.out 2>&1 &
holder=$!
exec 3> /tmp/wd/hold.in
i=0
until grep -q . /tmp/wd/hold.out 2> /dev/null; do
  i=$((i + 1)); [ $i -lt 600 ] || give_up "holder did not answer"; sleep 0.1
done
[ "$(cat /tmp/wd/hold.out)" = ok ] && ok "holder $holder acquired $name" \
  || give_up "holder: $(cat /tmp/wd/hold.out)"

# The fence helper guards the holder and pets the watchdog (vmlockctl status).
i=0
while :; do
  st=$("$bin/vmlockctl" status --json 2> /dev/null)
  j() { printf '%s\n' "$st" | sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p"; }
  [ "$(j fence_guarded)" = 1 ] && [ "$(j watchdog_state)" = petting ] && break
  i=$((i + 1)); [ $i -lt 100 ] || { printf '%s\n' "$st"; give_up "helper not guarding and petting"; }
  sleep 0.2
done
helper=$(j fence_helper_pid)
"$bin/vmlockctl" status | sed 's/^/WD status: /'
[ "$(j fence_helper_running)" = true ] && [ -n "$helper" ] \
  && [ "$(j watchdog_device)" = /dev/watchdog ] && [ -n "$(j watchdog_timeout_s)" ] \
  && [ -n "$(j watchdog_last_pet_ms)" ] && [ -n "$(j fence_deadline_ms)" ] \
  && ok "status: helper $helper guards 1, watchdog /dev/watchdog petting, timeout $(j watchdog_timeout_s) s" \
  || bad "status lacks the fence or watchdog fields"
echo "WD ready $(up) lease_ttl=${ttl:-default} watchdog_timeout_s=$(j watchdog_timeout_s)"

# Let the other host see the disk held (a few refusals), then freeze.
sleep 3
echo "WD freeze $(up)"
if [ "$mode" = late ]; then
  kill -STOP "$daemon"
  echo "WD daemon frozen $(up)"
  # The helper's own status (its socket; the daemon cannot answer now).
  /usr/bin/python3 - /tmp/wd/A.json.fence.sock <<'EOF' || bad "the helper never withheld its pets"
import socket, sys, time
until = time.monotonic() + 60
while time.monotonic() < until:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"status\n")
    line = s.makefile().readline().strip()
    s.close()
    if "watchdog=withheld" in line:
        print("WD helper withholds: " + line, flush=True)
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
EOF
  kill -STOP "$helper"
else
  kill -STOP "$helper" "$daemon"
fi
echo "WD frozen $(up) mode=$mode daemon=$daemon helper=$helper"
# Heartbeat until the reset: the guest's clock and whether the holder (the
# "VM") still runs. Nothing in the guest may kill it now: its fencers are
# stopped; only the watchdog can end this.
end=$(( ${ttl:-10} * 4 + 30 ))
start=$(up)
while :; do
  now=$(up)
  alive=no; kill -0 "$holder" 2> /dev/null && alive=yes
  echo "WD beat $now holder=$alive"
  [ "${now%.*}" -lt $(( ${start%.*} + end )) ] || break
  sleep 0.1
done
give_up "no reset within $end s of the freeze"
