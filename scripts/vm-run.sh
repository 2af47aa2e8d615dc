#!/usr/bin/env bash
# Runs one shell script as root inside a throw-away Linux guest whose root
# filesystem is this machine's own, read-only (9p), with a tmpfs /tmp.
#
#   scripts/vm-run.sh [--mem 16G] [--cpus 2] [--net] SCRIPT [ARGS...]
#
# --net gives the guest QEMU's user-mode network: the guest is 10.0.2.15,
# and 10.0.2.2 reaches this machine's loopback (a service listening on
# 127.0.0.1:P here is 10.0.2.2:P in the guest). Without it the guest has
# no network at all.
#
# What it is for: measurements the host forbids. Here the descriptor limit is
# hard at 20,000 and cannot be raised (no CAP_SYS_RESOURCE), so vmlockd cannot
# hold 100,000 locks; in the guest the script runs as real root with any
# limit it sets. Example (docs/PERFORMANCE.md, "Re-exec at 100,000 locks"):
#
#   cargo build --release --workspace --bins
#   scripts/vm-run.sh --mem 16G scripts/vm/reexec-100k.sh
#
# The guest is Debian's own kernel (downloaded once with apt-get download,
# never installed) and busybox for its init. It runs under QEMU's software
# emulation (TCG): /dev/kvm opens here but its guests crawl, so absolute
# times inside are many times the host's. Compare only within one run, as
# ratios. Output: the script's stdout/stderr on this terminal; the guest can
# also write to /mnt/out (the host's $VM_OUT, default ./target/vm-out).
set -euo pipefail
cd "$(dirname "$0")/.."
mem=8G
cpus=2
net=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --net) net=1; shift ;;
    -*) echo "vm-run: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: scripts/vm-run.sh [--mem M] [--cpus N] [--net] SCRIPT [ARGS...]" >&2; exit 2; }
script=$(realpath "$1"); shift

work=${VM_WORK:-target/vm}
out=$(realpath -m "${VM_OUT:-target/vm-out}")
mkdir -p "$work" "$out"
work=$(realpath "$work")

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || ! need cpio; then
  [ "$(id -u)" -eq 0 ] || { echo "vm-run: need root to install qemu-system-x86 and cpio" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 cpio >/dev/null
fi

# Debian's generic kernel (9p and virtio as modules) and a static busybox.
kver=
if [ ! -f "$work/kernel/.done" ]; then
  rm -rf "$work/kernel" "$work/debs"
  mkdir -p "$work/debs" "$work/kernel"
  meta=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
  [ -n "$meta" ] || { echo "vm-run: cannot find Debian's kernel package" >&2; exit 1; }
  (cd "$work/debs" && apt-get download "$meta" busybox-static >/dev/null 2>&1)
  for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/kernel"; done
  touch "$work/kernel/.done"
fi
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
mods="$work/kernel/lib/modules/$kver/kernel"

# The initramfs: busybox, the modules for virtio and 9p, and an init that
# mounts the host's root read-only, puts tmpfs on /tmp, /run and /root,
# runs the script chrooted there, and powers off.
initrd="$work/initrd-$kver.gz"
if [ ! -f "$initrd" ] || [ "$0" -nt "$initrd" ]; then
  root="$work/initrd"
  rm -rf "$root"
  mkdir -p "$root"/{bin,dev,proc,sys,mnt,mods}
  cp "$work/kernel/bin/busybox" "$root/bin/"
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
           drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs \
           fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p \
           net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
    [ -f "$mods/$m.ko" ] && cp "$mods/$m.ko" "$root/mods/"
  done
  cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# Load order varies between kernels: three passes settle the dependencies.
for pass in 1 2 3; do for m in /mods/*.ko; do insmod "$m" 2>/dev/null; done; done
ip link set lo up
if grep -q 'vmnet=1' /proc/cmdline; then
  # QEMU's user-mode network: fixed addresses, the host at 10.0.2.2.
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
    || echo "vm-run: no network"
fi
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" hostroot /mnt || { echo "vm-run: 9p mount failed"; poweroff -f; }
mount -t 9p -o "$opts,rw" out /mnt/mnt || echo "vm-run: no output share"
for d in proc sys dev; do mount --bind /$d /mnt/$d; done
mount -t devpts devpts /mnt/dev/pts 2>/dev/null
mount -t tmpfs -o size=90% tmpfs /mnt/tmp
mount -t tmpfs tmpfs /mnt/run
# A writable home: a tmpfs on /root, unless the project itself lives under
# /root (a fresh root's clone): then /root stays the host's and HOME is /tmp.
home=/root
if grep -q 'vmroot=1' /proc/cmdline; then home=/tmp; else mount -t tmpfs tmpfs /mnt/root; fi
cmd=$(sed -n 's/.*vmrun=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "vm-run: guest $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
chroot /mnt /bin/sh -c "cd /tmp && HOME=$home PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin . /mnt/.vm-run-cmd" 
echo "vm-run: exit $?"
sync
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$initrd")
fi

# The command the guest runs: the script, from the host's path, with its
# arguments, from the project directory.
{
  printf 'cd %q\n' "$PWD"
  printf 'exec /bin/sh %q' "$script"
  for a in "$@"; do printf ' %q' "$a"; done
  printf '\n'
} > "$out/.vm-run-cmd"

# The project under /root (as in scripts/fresh-root.sh): the guest must not
# hide it under a tmpfs of its own.
case "$PWD" in /root | /root/*) in_root=1 ;; *) in_root=0 ;; esac
nic=(-nic none)
[ "$net" -eq 1 ] && nic=(-nic user,model=virtio-net-pci)
# VM_QEMU_ARGS: more QEMU arguments, split at spaces (e.g. a network
# between two guests: -netdev socket,... -device virtio-net-pci,...).
# shellcheck disable=SC2086
exec qemu-system-x86_64 -accel tcg,thread=multi -smp "$cpus" -m "$mem" \
  -nographic -no-reboot "${nic[@]}" ${VM_QEMU_ARGS:-} \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 vmrun=1 vmnet=$net vmroot=$in_root" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$out,mount_tag=out,security_model=none"
