#!/usr/bin/env bash
# The whole test suite: what the README calls "run the tests" and what CI runs.
# Unit tests, the differential suite against libvirt's virtlockd (run in private
# mount namespaces; nothing touches the machine's /run/libvirt), re-exec and
# cluster tests, and the fuzz-corpus replay.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Integration tests spawn the daemon, the lease holder and the lockd.so runner
# as separate processes: build every binary first.
cargo build --workspace --all-features --bins --locked
cargo test --workspace --all-features --locked "$@"
# The DLM back end on the real kernel DLM (docs/cluster.md), in a guest on
# Debian's kernel, which has dlm.ko (this machine's has none): 1 to 2 min.
# (tee writes to a file and to its own stdout, our stderr: `tee /dev/stderr`
# would reopen, and so truncate, a log file that stderr is redirected to.)
dlm_log=$(mktemp)
trap 'rm -f "$dlm_log"' EXIT
scripts/vm-run.sh scripts/vm/dlm-test.sh --bin-dir target/debug 2>&1 | tee "$dlm_log" >&2 || true
if ! grep -q 'vm-run: exit 0' "$dlm_log" || ! grep -q ' passed, 0 failed' "$dlm_log"; then
  echo "test.sh: scripts/vm/dlm-test.sh failed (the guest's output is above)" >&2
  exit 1
fi
# A frozen host (vmlockd and its fence helper stopped) is reset by the kernel
# watchdog the helper pets, before another host can take its disk: a guest
# as host A, this machine as host B (docs/RELIABILITY.md): about 30 s.
target/debug/vmlock-vm-watchdog
# The Debian package, built once, installed, upgraded and removed in
# throw-away roots while a daemon serves locks (deb_install.rs).
deb=$(scripts/build-deb.sh | tail -n 1)
VMLOCK_DEB=$deb cargo test -p vmlock-compat --all-features --locked --test deb_install -- --ignored
