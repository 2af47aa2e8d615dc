# shellcheck shell=bash
# Guest side of scripts/vm-run.sh: the DLM back end (lock_backend = "dlm")
# on the real Linux kernel DLM. Runs as root in the guest, from the project
# directory, on binaries built on the host first:
#
#   cargo build --release --workspace --bins
#   scripts/vm-run.sh scripts/vm/dlm-test.sh [--bin-dir DIR]
#
# It loads configfs and dlm.ko from the guest kernel's package (the one
# vm-run.sh extracted), starts a single-node corosync cluster (its config in
# the guest's tmpfs, `corosync -c`) and dlm_controld with fencing disabled
# (one node, nobody to fence; production needs fencing, docs/cluster.md),
# then two vmlockd daemons A and B on the DLM back end. Each runs in its own
# mount namespace with a private tmpfs on the disk directory, so the same
# disk path is a different file to each: their local fcntl locks can never
# conflict, and every refusal between them comes from the DLM (two hosts of
# one cluster, as far as the DLM can tell: locks of different processes
# conflict like those of different nodes). One line per check, then
# "N passed, M failed"; the exit status is 0 only if every check passed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u
bin=$PWD/target/release
if [ "${1:-}" = --bin-dir ]; then bin=$2; shift 2; fi
vm_work=${VM_WORK:-target/vm}
W=/tmp/dlm-test
D=$W/disks
mkdir -p "$W" "$D" "$W/a" "$W/b" "$W/c" "$W/bench-a" "$W/bench-c"
t_start=$(date +%s)
pid_a=
pass=0
fail=0
check() {
  local name=$1
  shift
  if "$@" >>"$W/checks.log" 2>&1; then
    echo "ok   $name"
    pass=$((pass + 1))
  else
    echo "FAIL $name"
    fail=$((fail + 1))
  fi
}
finish() {
  if [ "$fail" -gt 0 ]; then
    for f in checks.log corosync.log dlm_controld.log a.log b.log c.log; do
      [ -f "$W/$f" ] && { echo "--- $f (last 30 lines)"; tail -30 "$W/$f"; }
    done
  fi
  # Every log, for the host (vm-run.sh's output share, ./target/vm-out).
  if [ -d /mnt ] && [ -w /mnt ]; then
    mkdir -p /mnt/dlm-test && cp "$W"/*.log "$W"/*.json /mnt/dlm-test/ 2>/dev/null
  fi
  echo "guest test time: $(($(date +%s) - t_start)) s"
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit
}
wait_for() { # seconds, command...
  local n=$1
  shift
  for _ in $(seq "$((n * 5))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# --- the kernel DLM --------------------------------------------------------
mods=$(ls -d "$vm_work"/kernel/lib/modules/"$(uname -r)"/kernel 2>/dev/null)
[ -n "$mods" ] && insmod "$mods/fs/configfs/configfs.ko" 2>/dev/null
[ -n "$mods" ] && insmod "$mods/fs/dlm/dlm.ko" 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
check "dlm.ko and configfs loaded (dlm-control in /proc/misc)" grep -q dlm-control /proc/misc
grep -q dlm-control /proc/misc || finish

# No udev in the guest: libdlm opens /dev/misc/<device>, so link the
# devtmpfs nodes there as the dlm package's udev rule would.
mkdir -p /dev/misc /dev/shm
mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm
(
  while :; do
    for d in /dev/dlm-control /dev/dlm-monitor /dev/dlm_plock /dev/dlm_*; do
      [ -c "$d" ] && [ ! -e "/dev/misc/${d#/dev/}" ] && ln -s "../${d#/dev/}" "/dev/misc/${d#/dev/}"
    done
    sleep 0.2
  done
) &
udev_pid=$!

# --- corosync and dlm_controld --------------------------------------------
ip link set lo up
for d in /var/lib/corosync /var/log/corosync /var/log/cluster /etc/dlm; do
  [ -d "$d" ] && mount -t tmpfs tmpfs "$d"
done
cat >"$W/corosync.conf" <<'EOF'
totem {
  version: 2
  cluster_name: vmlocktest
  crypto_cipher: none
  crypto_hash: none
  transport: knet
}
nodelist {
  node {
    ring0_addr: 127.0.0.1
    name: guest
    nodeid: 1
  }
}
quorum {
  provider: corosync_votequorum
}
logging {
  to_stderr: yes
  to_syslog: no
  to_logfile: no
}
EOF
corosync -f -c "$W/corosync.conf" >"$W/corosync.log" 2>&1 &
quorate() { corosync-quorumtool -s 2>/dev/null | grep -q 'Quorate: *Yes'; }
check "corosync: single-node cluster is quorate" wait_for 60 quorate
# Before dlm_controld runs, the kernel refuses to create a lockspace
# (EUNATCH): the daemon must refuse to start and say why.
cat >"$W/d.conf" <<EOF
unix_sock_dir = "$W/d"
lock_backend = "dlm"
dlm_lockspace = "vmlock"
dlm_lock_info_file = "$W/d-locks.json"
EOF
mkdir -p "$W/d"
no_controld() {
  local out
  if out=$(timeout 60 "$bin/vmlockd" -f "$W/d.conf" -p "$W/d.pid" 2>&1); then
    echo "started: $out"
    return 1
  fi
  echo "$out"
  echo "$out" | grep -q "dlm_controld"
}
check "without dlm_controld vmlockd refuses to start on the DLM, naming it" no_controld

# Fencing off: a single node has no peer to fence. Production: on.
dlm_controld --foreground 1 --enable_fencing 0 --enable_startup_fencing 0 \
  --enable_quorum_fencing 0 >"$W/dlm_controld.log" 2>&1 &
check "dlm_controld runs (fencing disabled)" wait_for 60 dlm_tool status

# --- the daemons -----------------------------------------------------------
conf() { # name backend
  cat <<EOF
unix_sock_dir = "$W/$1"
log_level = 2
log_outputs = "2:stderr"
lock_backend = "$2"
dlm_lockspace = "vmlock"
dlm_lock_info_file = "$W/$1-locks.json"
EOF
}
conf a dlm >"$W/a.conf"
conf b dlm >"$W/b.conf"
conf c file >"$W/c.conf"
start_in_ns() { # name: vmlockd in a mount namespace of its own disks
  unshare -m bash -c "mount -t tmpfs tmpfs '$D' && touch '$D'/a.img '$D'/s.img '$D'/d.img '$D'/e.img '$D'/f.img &&
    exec '$bin/vmlockd' -f '$W/$1.conf' -p '$W/$1.pid'" >>"$W/$1.log" 2>&1 &
  printf -v "pid_$1" %s "$!"
  wait_for 60 ctl "$1" status
}
ctl() { # name, vmlockctl arguments
  local n=$1
  shift
  "$bin/vmlockctl" --socket "$W/$n/virtlockd-sock" "$@"
}
refused() { # name, acquire arguments: must fail as a cluster refusal
  local out
  if out=$(ctl "$@" 2>&1); then
    echo "granted: $*"
    return 1
  fi
  echo "$out"
  # The refusal names the DLM: it cannot come from a local fcntl lock.
  echo "$out" | grep -q "the DLM lock is held in a conflicting mode"
}
check "vmlockd A starts on the DLM back end" start_in_ns a
check "vmlockd B starts on the DLM back end" start_in_ns b
"$bin/vmlockd" -f "$W/c.conf" -p "$W/c.pid" >>"$W/c.log" 2>&1 &
check "vmlockd C starts on the file back end" wait_for 60 ctl c status
check "the DLM lockspace vmlock exists" wait_for 10 sh -c 'dlm_tool ls | grep -q "name *vmlock"'

sleep 100000 &
vm1=$!
sleep 100000 &
vm2=$!
sleep 100000 &
vm3=$!

# --- exclusion and sharing across the two daemons -------------------------
check "A: vm1 takes a.img exclusively" ctl a acquire --pid "$vm1" "$D/a.img"
check "B: vm2 is refused a.img exclusively (DLM EX held by A)" refused b acquire --pid "$vm2" "$D/a.img"
check "B: vm2 is refused a.img shared (PR against EX)" refused b acquire --pid "$vm2" --shared "$D/a.img"
check "A: vm1 takes s.img shared" ctl a acquire --pid "$vm1" --shared "$D/s.img"
check "B: vm2 takes s.img shared too (PR with PR)" ctl b acquire --pid "$vm2" --shared "$D/s.img"
check "B: vm2 releases s.img" ctl b release --pid "$vm2" "$D/s.img"
check "B: vm2 is refused s.img exclusively (EX against A's PR)" refused b acquire --pid "$vm2" "$D/s.img"
check "A: vm3 takes d.img exclusively" ctl a acquire --pid "$vm3" "$D/d.img"

# --- through libvirt's own lockd.so (the plugin libvirtd loads) -----------
# lockd.so connects to /run/libvirt/virtlockd-sock: each plugin run gets
# its daemon's socket directory there, in a mount namespace of its own.
touch "$D/f.img" # lockd.so resolves the path in the client's namespace
plugin() { # name: runs vmlock-plugin-run on stdin against that daemon
  unshare -m bash -c "mkdir -p /run/libvirt && mount --bind '$W/$1' /run/libvirt &&
    exec '$bin/vmlock-plugin-run'"
}
# As libvirtd starts a domain: the QEMU stand-in registers (restricted
# connection, kept), then the domain's disks are acquired for its pid.
vm_script() { # uuid name id
  printf 'init\nnew %s %s %s self\ndisk %s\nspawn-qemu\nnew %s %s %s child\ndisk %s\nacquire none\n' \
    "$1" "$2" "$3" "$D/f.img" "$1" "$2" "$3" "$D/f.img"
}
{ vm_script 11111111-2222-3333-4444-555555555555 vm-f 7; echo 'sleep 20000'; echo kill-qemu; } |
  plugin a >"$W/plugin-a.out" 2>&1 &
plugin_a=$!
check "lockd.so through A: vm-f takes f.img" wait_for 60 grep -q '^ok fd=' "$W/plugin-a.out"
{ vm_script 11111111-2222-3333-4444-666666666666 vm-g 8; echo kill-qemu; } |
  plugin b >"$W/plugin-b.out" 2>&1
check "lockd.so through B: vm-g refused f.img with error 87 naming the DLM" \
  sh -c "grep '^err 87 ' '$W/plugin-b.out' | grep -q 'the DLM lock is held in a conflicting mode'"
# The stand-in (the plugin run's child) and the run end: A releases f.img.
kill $(pgrep -P "$plugin_a") "$plugin_a" 2>/dev/null
wait "$plugin_a" 2>/dev/null
cat "$W/plugin-a.out" "$W/plugin-b.out" >>"$W/checks.log"

# --- a SIGKILLed daemon leaves its locks as orphans -----------------------
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null
check "A killed (SIGKILL) with 3 locks held" sh -c "! kill -0 $pid_a 2>/dev/null"
check "B still refused a.img: A's lock is an orphan, still held" refused b acquire --pid "$vm2" "$D/a.img"
check "B still refused d.img: orphan" refused b acquire --pid "$vm2" "$D/d.img"
# The VM behind d.img dies while no daemon runs.
kill -KILL "$vm3"
wait "$vm3" 2>/dev/null
check "A restarts and adopts its orphans" start_in_ns a
check "A's log names the adoptions" grep -q "adopted orphan lock" "$W/a.log"
check "A holds vm1's a.img again (adopted, relocked locally)" sh -c "'$bin/vmlockctl' --socket '$W/a/virtlockd-sock' list --owner-pid $vm1 | grep -q a.img"
check "B still refused a.img after the adoption" refused b acquire --pid "$vm2" "$D/a.img"
check "vm3 died while A was down: its orphan was released, B takes d.img" ctl b acquire --pid "$vm2" "$D/d.img"
check "A releases the adopted a.img, then B takes it" sh -c "
  '$bin/vmlockctl' --socket '$W/a/virtlockd-sock' release --pid $vm1 '$D/a.img' &&
  '$bin/vmlockctl' --socket '$W/b/virtlockd-sock' acquire --pid $vm2 '$D/a.img'"

# --- re-exec keeps every DLM lock ------------------------------------------
check "A: vm1 takes e.img exclusively" ctl a acquire --pid "$vm1" "$D/e.img"
locks_before=$(python3 -c "import json;print(len(json.load(open('$W/a-locks.json'))['locks']))")
reexecs() { grep -c "restore took" "$W/a.log"; }
n0=$(reexecs)
# B tries e.img over and over while A re-executes: never granted.
rm -f "$W/stop" "$W/granted"
(
  while [ ! -e "$W/stop" ]; do
    ctl b acquire --pid "$vm2" "$D/e.img" >/dev/null 2>&1 && echo granted >>"$W/granted"
    sleep 0.05
  done
) &
prober=$!
sleep 1
kill -USR1 "$pid_a"
reexeced() { [ "$(reexecs)" -gt "$n0" ] && ctl a status; }
check "A re-executes itself (SIGUSR1)" wait_for 60 reexeced
sleep 1
touch "$W/stop"
wait "$prober"
check "B was refused e.img throughout A's re-exec" test ! -e "$W/granted"
locks_after=$(python3 -c "import json;print(len(json.load(open('$W/a-locks.json'))['locks']))")
check "A's lock-information file lists the same $locks_before locks after the re-exec" test "$locks_after" = "$locks_before"
check "B refused e.img after A's re-exec" refused b acquire --pid "$vm2" "$D/e.img"
check "B refused s.img exclusively after A's re-exec" refused b acquire --pid "$vm2" "$D/s.img"
check "A still holds e.img and s.img for vm1" sh -c "'$bin/vmlockctl' --socket '$W/a/virtlockd-sock' list --owner-pid $vm1 | grep e.img && '$bin/vmlockctl' --socket '$W/a/virtlockd-sock' list --owner-pid $vm1 | grep s.img"
check "A releases e.img after the re-exec, then B takes it" sh -c "
  '$bin/vmlockctl' --socket '$W/a/virtlockd-sock' release --pid $vm1 '$D/e.img' &&
  '$bin/vmlockctl' --socket '$W/b/virtlockd-sock' acquire --pid $vm2 '$D/e.img'"

# --- acquire latency: DLM back end vs file-only, same guest, same run -----
bench() { # name files
  "$bin/vmlock-bench" raw-own --socket "$W/$1/virtlockd-sock" --clients 1 \
    --duration "${DLM_BENCH_SECS:-10}" --files-dir "$2" | head -1
}
out_dlm=$(bench a "$W/bench-a")
out_file=$(bench c "$W/bench-c")
echo "DLM  back end (A): $out_dlm"
echo "file back end (C): $out_file"
field() { echo "$1" | sed -n "s/.* $2 \([0-9]*\) ns.*/\1/p"; }
rate() { echo "$1" | sed -n 's/^raw-own: \([0-9]*\) ops\/s.*/\1/p'; }
errors() { echo "$1" | sed -n 's/.*errors \([0-9]*\),.*/\1/p'; }
p50_dlm=$(field "$out_dlm" p50)
p50_file=$(field "$out_file" p50)
r_dlm=$(rate "$out_dlm")
r_file=$(rate "$out_file")
measured() {
  [ -n "$p50_dlm" ] && [ -n "$p50_file" ] && [ "${r_dlm:-0}" -gt 0 ] && [ "${r_file:-0}" -gt 0 ] &&
    [ "$(errors "$out_dlm")" = 0 ] && [ "$(errors "$out_file")" = 0 ]
}
check "acquire+release cycles measured on both back ends without errors" measured
if measured; then
  awk -v a="$p50_dlm" -v b="$p50_file" -v ra="$r_dlm" -v rb="$r_file" 'BEGIN {
    printf "latency: p50 per call DLM %d ns / file %d ns = %.2fx; cycles/s DLM %d / file %d = %.2fx\n", a, b, a / b, ra, rb, ra / rb }'
fi

kill "$udev_pid" 2>/dev/null
finish
