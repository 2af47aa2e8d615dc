# shellcheck shell=bash
# Guest side of the two-node DLM partition case (scripts/vm/dlm-2node-run.sh
# starts two guests joined by a private QEMU socket network and runs this
# in each, as node 1 and node 2). Node 1 takes a disk; node 2 is refused it
# through the DLM; node 2 cuts its link. Both nodes are then inquorate
# (two votes expected, one seen): node 2 must not be granted the disk, and
# node 1 keeps holding it. Fencing is off (no fence device in a guest), so
# this checks quorum, not fencing. One line per check, then "N passed, M
# failed".
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u
n=$1
bin=${2:-$PWD/target/release}

vm_work=${VM_WORK:-target/vm}
W=/tmp/dlm-2node
mkdir -p "$W/d" "$W/disks"
touch "$W/disks/p.img"
pass=0
fail=0
check() {
  local name=$1
  shift
  if "$@" >>"$W/checks.log" 2>&1; then
    echo "node $n: ok   $name"
    pass=$((pass + 1))
  else
    echo "node $n: FAIL $name"
    fail=$((fail + 1))
  fi
}
finish() {
  if [ -d /mnt ] && [ -w /mnt ]; then
    mkdir -p /mnt/dlm-2node && cp "$W"/*.log /mnt/dlm-2node/ 2>/dev/null
  fi
  echo "node $n: $pass passed, $fail failed"
  exit
}
wait_for() {
  local s=$1
  shift
  for _ in $(seq "$((s * 5))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
mods=$(ls -d "$vm_work"/kernel/lib/modules/"$(uname -r)"/kernel)
for m in fs/configfs/configfs fs/dlm/dlm net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
  insmod "$mods/$m.ko" 2>/dev/null
done
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
mkdir -p /dev/misc /dev/shm
mount -t tmpfs tmpfs /dev/shm
(
  while :; do
    for d in /dev/dlm-control /dev/dlm-monitor /dev/dlm_plock /dev/dlm_*; do
      [ -c "$d" ] && [ ! -e "/dev/misc/${d#/dev/}" ] && ln -s "../${d#/dev/}" "/dev/misc/${d#/dev/}"
    done
    sleep 0.2
  done
) &
for d in /var/lib/corosync /var/log/corosync /var/log/cluster /etc/dlm; do
  [ -d "$d" ] && mount -t tmpfs tmpfs "$d"
done
ip link set lo up
wait_for 10 test -e /sys/class/net/eth0
ip addr add "10.9.0.$n/24" dev eth0
ip link set eth0 up
cat >"$W/corosync.conf" <<EOF
totem {
  version: 2
  cluster_name: vmlock2
  crypto_cipher: none
  crypto_hash: none
  transport: knet
}
nodelist {
  node {
    ring0_addr: 10.9.0.1
    name: node1
    nodeid: 1
  }
  node {
    ring0_addr: 10.9.0.2
    name: node2
    nodeid: 2
  }
}
quorum {
  provider: corosync_votequorum
  expected_votes: 2
}
logging {
  to_stderr: yes
  to_syslog: no
  to_logfile: no
}
EOF
corosync -f -c "$W/corosync.conf" >"$W/corosync.log" 2>&1 &
members() { corosync-quorumtool -s 2>/dev/null | sed -n 's/^Total votes: *\([0-9]*\).*/\1/p'; }
quorate() { corosync-quorumtool -s 2>/dev/null | grep -q 'Quorate: *Yes'; }
check "two-node cluster formed and quorate" wait_for 180 quorate
dlm_controld --foreground 1 --enable_fencing 0 --enable_startup_fencing 0 \
  --enable_quorum_fencing 0 >"$W/dlm_controld.log" 2>&1 &
check "dlm_controld runs" wait_for 60 dlm_tool status
cat >"$W/d.conf" <<EOF
unix_sock_dir = "$W/d"
log_level = 2
log_outputs = "2:stderr"
lock_backend = "dlm"
dlm_lockspace = "vmlock"
dlm_lock_info_file = "$W/locks.json"
EOF
ctl() { timeout "${T:-30}" "$bin/vmlockctl" --socket "$W/d/virtlockd-sock" "$@"; }
# dlm_controld answers before it has given the kernel this node's address
# (the join then fails with ENOTCONN and vmlockd exits, as it would under
# systemd, which restarts it): start it again until it serves.
start_daemon() {
  for _ in $(seq 30); do
    "$bin/vmlockd" -f "$W/d.conf" -p "$W/d.pid" >>"$W/vmlockd.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
      ctl status >/dev/null 2>&1 && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && return 1
    sleep 3
  done
  return 1
}
check "vmlockd starts on the DLM back end" start_daemon
both_members() { dlm_tool ls 2>/dev/null | grep -q '^members *1 2'; }
check "both nodes are members of the DLM lockspace" wait_for 240 both_members
sleep 100000 &
vm=$!
held_elsewhere() { # granted meanwhile (node 1 not there yet): give it back
  local out
  if out=$(ctl acquire --pid "$vm" "$W/disks/p.img" 2>&1); then
    ctl release --pid "$vm" "$W/disks/p.img"
    sleep 2
    return 1
  fi
  echo "$out" | grep -q "the DLM lock is held in a conflicting mode"
}
if [ "$n" = 1 ]; then
  check "node 1 takes p.img" wait_for 120 ctl acquire --pid "$vm" "$W/disks/p.img"
  # Node 2 cuts its link once it has been refused; wait for that.
  check "node 1 sees node 2 leave (one vote left)" wait_for 300 sh -c "[ \"\$(corosync-quorumtool -s 2>/dev/null | sed -n 's/^Total votes: *\\([0-9]*\\).*/\\1/p')\" = 1 ]"
  check "node 1 is inquorate after the partition" sh -c "! corosync-quorumtool -s | grep -q 'Quorate: *Yes'"
  sleep 60 # node 2 tries meanwhile
  check "node 1 still holds p.img" sh -c "'$bin/vmlockctl' --socket '$W/d/virtlockd-sock' list | grep -q p.img"
else
  check "node 2 is refused p.img: node 1 holds it (DLM across nodes)" wait_for 180 held_elsewhere
  ip link set eth0 down
  check "node 2 sees node 1 leave (one vote left)" wait_for 120 sh -c "[ \"\$(corosync-quorumtool -s 2>/dev/null | sed -n 's/^Total votes: *\\([0-9]*\\).*/\\1/p')\" = 1 ]"
  check "node 2 is inquorate after the partition" sh -c "! corosync-quorumtool -s | grep -q 'Quorate: *Yes'"
  sleep 10
  # Inquorate: the DLM must not grant what node 1 held (it waits for
  # quorum and fencing; the acquire blocks or is refused).
  t0=$(date +%s)
  out=$(T=40 ctl acquire --pid "$vm" "$W/disks/p.img" 2>&1)
  rc=$?
  echo "node 2 acquire after the partition: rc $rc after $(($(date +%s) - t0)) s: $out"
  check "node 2 is not granted p.img while inquorate" test "$rc" != 0
fi
echo "node $n: corosync members at the end: $(members)"
finish
