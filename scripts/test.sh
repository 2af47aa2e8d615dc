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
# The Debian package, built once, installed, upgraded and removed in
# throw-away roots while a daemon serves locks (deb_install.rs).
deb=$(scripts/build-deb.sh | tail -n 1)
VMLOCK_DEB=$deb cargo test -p vmlock-compat --all-features --locked --test deb_install -- --ignored
