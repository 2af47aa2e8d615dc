#!/usr/bin/env bash
# The two-node DLM partition case: two guests (scripts/vm-run.sh) joined by
# a private QEMU socket network, each running scripts/vm/dlm-2node.sh as
# one node. Run from the project directory after
#   cargo build --release --workspace --bins
#   scripts/vm/dlm-2node-run.sh [BIN_DIR]
# Prints both guests' check lines; exits 0 only if both ended "0 failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
bin=$(realpath "${1:-target/release}")
port=${DLM_2NODE_PORT:-19119}
mkdir -p target/vm-out/node1 target/vm-out/node2
net() { echo "-netdev socket,id=n0,$1 -device virtio-net-pci,netdev=n0,mac=52:54:00:00:19:0$2"; }
VM_OUT=target/vm-out/node1 VM_QEMU_ARGS=$(net "listen=127.0.0.1:$port" 1) \
  scripts/vm-run.sh --mem 1G scripts/vm/dlm-2node.sh 1 "$bin" >target/vm-out/node1.log 2>&1 &
one=$!
sleep 3
VM_OUT=target/vm-out/node2 VM_QEMU_ARGS=$(net "connect=127.0.0.1:$port" 2) \
  scripts/vm-run.sh --mem 1G scripts/vm/dlm-2node.sh 2 "$bin" >target/vm-out/node2.log 2>&1
wait "$one"
grep -h -a -E '^node [12]: |^node 2 acquire' target/vm-out/node1.log target/vm-out/node2.log | tr -d '\r'
grep -q -a 'node 1: [0-9]* passed, 0 failed' target/vm-out/node1.log &&
  grep -q -a 'node 2: [0-9]* passed, 0 failed' target/vm-out/node2.log
