#!/bin/bash
# Captures a re-exec state file written by our own vmlockd, for corpus/read_state/.
#
# Runs vmlockd (system mode, as root) in a private mount namespace with a tmpfs on /run,
# so the machine's /run/libvirt is never touched. Two QEMU stand-ins (libvirt's lockd.so
# driven by vmlock-plugin-run) and four vmlock-hold clients register and take direct,
# shared and indirect (lockspace) leases; then argv[0] is pointed at a script that copies
# /run/virtlockd-restart-exec.json and SIGUSR1 makes the daemon re-exec into it.
#
#   cargo build -p vmlockd -p vmlock-testkit --bins
#   sudo fuzz/capture_state.sh [BIN_DIR (default $CARGO_TARGET_DIR/debug)] > state.json
set -eu
BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bin" "$W/leases"
truncate -s 1M "$W/disk1.img" "$W/disk2.img" "$W/shared.img"
printf 'file_lockspace_dir = "%s/leases"\n' "$W" > "$W/qemu-lockd.conf"
printf '#!/bin/sh\ncp /run/virtlockd-restart-exec.json %s/state.json\nexec sleep 2\n' "$W" \
    > "$W/capture.sh"
chmod +x "$W/capture.sh"
cat > "$W/vm1" <<END
init $W/qemu-lockd.conf
new 11111111-2222-3333-4444-555555555555 vm1 1 self
disk $W/disk1.img
spawn-qemu
END
cat > "$W/vm2" <<END
init
new 22222222-2222-3333-4444-555555555555 vm2 2 self
disk $W/disk2.img
disk $W/shared.img shared
spawn-qemu
END
cat > "$W/inner.sh" <<END
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt
ln -s "$BIN/vmlockd" "$W/bin/virtlockd"
"$W/bin/virtlockd" > "$W/daemon.log" 2>&1 &
D=\$!
for i in \$(seq 50); do [ -S /run/libvirt/virtlockd-sock ] && break; sleep 0.1; done
S=/run/libvirt/virtlockd-sock
H="$BIN/vmlock-hold --register \$S"
(cat "$W/vm1"; sleep 6) | "$BIN/vmlock-plugin-run" > /dev/null &
(cat "$W/vm2"; sleep 6) | "$BIN/vmlock-plugin-run" > /dev/null &
sleep 1 # vm1's plugin creates the lockspace the last holder needs
(sleep 7) | \$H "" "$W/disk1.img" > /dev/null &
(sleep 7) | \$H "" "$W/shared.img" --shared --twice > /dev/null &
(sleep 7) | \$H "" "$W/shared.img" --shared > /dev/null &
(sleep 7) | \$H "$W/leases" 0123456789abcdef --autocreate > /dev/null &
sleep 2.5
ln -s "$W/capture.sh" "$W/bin/new" && mv -T "$W/bin/new" "$W/bin/virtlockd"
kill -USR1 \$D
sleep 3
wait
END
unshare -m --propagation private bash "$W/inner.sh"
cat "$W/state.json"
