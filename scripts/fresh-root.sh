#!/usr/bin/env bash
# The README's promise, checked on a fresh machine: a Debian bookworm root
# made from Debian's packages alone (mmdebstrap, variant minbase), given only
# the Rust toolchain (read-only) and a clean clone of the commit under test.
# Inside it, as a newcomer would, as root:
#   1. scripts/install-deps.sh
#   2. the build of every binary (what scripts/test.sh builds)
#   3. the README's first command, `cargo run --release -p vmlockd`: the
#      daemon must come up on its embedded defaults and lock a disk for a
#      client on its socket; then it is stopped
#   4. the build of the test suite (`cargo test --no-run`), or with --suite
#      the README's second command, scripts/test.sh, in full
# A package missing from scripts/install-deps.sh fails one of these steps;
# the failure names the step and, when the host has the missing file, the
# Debian package that provides it.
#
# Usage: scripts/fresh-root.sh [--rev REV] [--suite] [--keep]
#   --rev REV  the commit to check (default: HEAD of this checkout; only
#              committed work is checked, as in a clone)
#   --suite    run scripts/test.sh inside instead of only building the tests
#   --keep     keep the run's directory (root overlay, clone, logs)
#
# Caches, under $VMLOCK_FRESH_ROOT_CACHE (default /var/cache/vmlock-fresh-root):
#   base-KEY/       the root as mmdebstrap made it, never written to: each run
#                   gets its own overlay on it (a fresh root every time).
#                   Rebuilt when older than $VMLOCK_FRESH_ROOT_MAX_AGE_DAYS
#                   (default 7) or when the suite, variant or this machine's
#                   apt sources change (KEY).
#   apt-archives/   downloaded .deb files (apt still installs each one)
#   cargo-registry/ crates.io downloads (sources only; every build is cold)
# Needs root (mmdebstrap, mount namespaces, pivot_root) and the network access to
# Debian's packages and crates.io that a fresh machine has.
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
# Bump to force a rebuild of cached roots after changing how they are made.
RECIPE=1

say() { echo "fresh-root: $*" >&2; }
die() {
  echo "fresh-root: FAILED: $*" >&2
  exit 1
}

rev=HEAD
suite=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rev)
      [ $# -ge 2 ] || die "--rev needs a revision"
      rev=$2
      shift 2
      ;;
    --suite) suite=1; shift ;;
    --keep) keep=1; shift ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, a private mount namespace and pivot_root)"
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
sha=$(git -C "$repo" rev-parse --verify --quiet "$rev^{commit}") || die "no commit $rev in $repo"

cache=${VMLOCK_FRESH_ROOT_CACHE:-/var/cache/vmlock-fresh-root}
max_age=${VMLOCK_FRESH_ROOT_MAX_AGE_DAYS:-7}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
[ -x "$cargo_bin/cargo" ] || die "no cargo in $cargo_bin (the toolchain the root is given)"
[ -d "$rustup_home/toolchains" ] || die "no rustup toolchains in $rustup_home"
toolchain=$(cd "$repo" && rustup show active-toolchain | cut -d' ' -f1)
[ -n "$toolchain" ] || die "rustup names no active toolchain"
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "this machine has no /etc/ssl/certs/ca-certificates.crt to give the root"

if ! command -v mmdebstrap >/dev/null; then
  say "installing mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (mmdebstrap is needed to make the root)"
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null || die "cannot install mmdebstrap"
fi

mkdir -p "$cache/apt-archives/partial" "$cache/cargo-registry"
exec 9>"$cache/lock"
if ! flock -n 9; then
  say "waiting for another fresh-root run to finish ($cache/lock)"
  flock 9
fi

# The root uses this machine's apt sources and the settings apt needs to
# reach them (a fresh machine of this kind has the same).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || die "this machine has no apt sources to give the root"
acquire=$(apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|(http|https|ftp)::[Pp]roxy)( |::)' || true)
key=$(printf '%s\n' "$RECIPE $SUITE $VARIANT" "$acquire" | cat - "${sources[@]}" | sha256sum | cut -c1-16)
base=$cache/base-$key
stamp=$base.made

t0=$SECONDS
if [ -f "$stamp" ] && [ -d "$base" ] && [ -z "$(find "$stamp" -mtime "+$max_age")" ]; then
  say "reusing the base root $base (made $(cat "$stamp"))"
else
  say "making a $SUITE $VARIANT root from Debian's packages in $base"
  rm -rf "$base" "$stamp" "$base.new"
  printf '%s\n' "$acquire" >"$cache/acquire.conf"
  if ! mmdebstrap --quiet --mode=root --variant="$VARIANT" --aptopt="$cache/acquire.conf" \
    "$SUITE" "$base.new" "${sources[@]}" </dev/null; then
    rm -rf "$base.new"
    die "mmdebstrap could not make the $SUITE root (apt sources: ${sources[*]})"
  fi
  mv "$base.new" "$base"
  date -u '+%Y-%m-%d %H:%M UTC' >"$stamp"
  # Roots made with other keys are stale now.
  for old in "$cache"/base-*; do
    case "$old" in "$base" | "$stamp") ;; *) rm -rf "$old" ;; esac
  done
  say "base root made in $((SECONDS - t0)) s"
fi
# .deb files apt has not used for a month.
find "$cache/apt-archives" -maxdepth 1 -name '*.deb' -atime +30 -delete

run=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
  if [ "$keep" = 1 ]; then
    say "kept $run (root overlay: upper/, logs: upper/root/fresh-*.log)"
  else
    rm -rf "$run"
  fi
}
trap cleanup EXIT
mkdir -p "$run/upper" "$run/work" "$run/root"
say "checking $sha (from $repo) in a fresh root"

# The steps, run inside the root. Each one prints a header; the first that
# fails ends the check with its name.
cat >"$run/steps.sh" <<'STEPS'
set -uo pipefail
cd /root/vmlock || exit 1
log=/root/fresh-step.log
failed() {
  echo "fresh-root: FAILED at step '$1' (exit $2)" >&2
  echo "fresh-root: $3" >&2
  echo "$1" >/root/fresh-failed-step
  exit 1
}
step() {
  local name=$1 hint=$2 t=$SECONDS rc
  shift 2
  echo "==> $name" >&2
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  cp "$log" "/root/fresh-$(echo "$name" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g').log"
  [ "$rc" -eq 0 ] || failed "$name" "$rc" "$hint"
  echo "==> $name: ok ($((SECONDS - t)) s)" >&2
}

# The README's first command, and a client on the daemon's socket.
first_command() {
  local sock=/run/libvirt/virtlockd-sock disk=/var/tmp/fresh-root-disk.img ctl=target/debug/vmlockctl
  local out pid rc
  if [ -e /etc/libvirt/virtlockd.conf ]; then
    echo "/etc/libvirt/virtlockd.conf exists: the daemon would not run on its embedded defaults" >&2
    return 1
  fi
  # Built first, so that waiting for the socket below is not waiting for rustc.
  cargo build --release -p vmlockd --locked || return 1
  cargo run --release -p vmlockd >/root/fresh-vmlockd.log 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    [ -S "$sock" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! [ -S "$sock" ]; then
    echo "vmlockd did not create $sock; its output:" >&2
    cat /root/fresh-vmlockd.log >&2
    kill "$pid" 2>/dev/null
    return 1
  fi
  echo "vmlockd (pid $pid) listens on $sock"
  : >"$disk"
  # A VM's life through the socket: REGISTER, ACQUIRE, the command runs
  # holding the lock (seen from outside the daemon), and a second owner is
  # refused while it does.
  if ! out=$($ctl exec --disk "$disk" -- $ctl check "$disk" 2>&1); then
    echo "vmlockctl exec through $sock failed: $out" >&2
    kill "$pid"
    return 1
  fi
  echo "held: $out"
  case "$out" in
    *exclusive*) ;;
    *) echo "the disk was not locked while vmlockctl exec ran: $out" >&2; kill "$pid"; return 1 ;;
  esac
  if out=$($ctl exec --disk "$disk" -- $ctl exec --disk "$disk" -- true 2>&1); then
    echo "a second owner got the disk another owner holds: $out" >&2
    kill "$pid"
    return 1
  fi
  echo "second owner refused: $out"
  out=$($ctl check "$disk" 2>&1)
  echo "after exit: $out"
  case "$out" in
    *unlocked*) ;;
    *) echo "the lock outlived its owner: $out" >&2; kill "$pid"; return 1 ;;
  esac
  kill -TERM "$pid"
  wait "$pid"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "vmlockd exited with status $rc on SIGTERM; its output:" >&2
    cat /root/fresh-vmlockd.log >&2
    return 1
  fi
  echo "vmlockd stopped cleanly"
}

step "scripts/install-deps.sh" "a package the project needs could not be installed" \
  scripts/install-deps.sh
step "build every binary" "the workspace's binaries do not build on a fresh machine after scripts/install-deps.sh" \
  cargo build --workspace --all-features --bins --locked
step "README: cargo run --release -p vmlockd" "the daemon did not come up on its defaults or did not serve a client" \
  first_command
if [ "${FRESH_SUITE:-0}" = 1 ]; then
  step "README: scripts/test.sh" "the test suite fails on a fresh machine" \
    scripts/test.sh
else
  step "build the test suite" "the test suite does not build on a fresh machine after scripts/install-deps.sh" \
    cargo test --workspace --all-features --locked --no-run
fi
STEPS

# Inside a private mount namespace (and PID namespace, so that nothing
# started in the root outlives the check), the root is an overlay on the
# cached base: writes go to this run's upper/ and are thrown away.
cat >"$run/inside.sh" <<'INSIDE'
set -euo pipefail
R=$run/root
mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
cp -L /etc/hosts "$R/etc/hosts"
# This machine's certificate trust (a root from Debian's packages lacks it;
# cargo needs it for crates.io), also where update-ca-certificates keeps it.
mkdir -p "$R/etc/ssl/certs" "$R/usr/local/share/ca-certificates"
cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/ssl/certs/ca-certificates.crt "$R/usr/local/share/ca-certificates/fresh-root-host.crt"
# The Rust toolchain, read-only; CARGO_HOME is the root's own.
mkdir -p "$R/opt/rustup" "$R/opt/cargo-bin" "$R/root/.cargo/registry"
mount --bind "$rustup_home" "$R/opt/rustup"
mount -o remount,bind,ro "$R/opt/rustup"
mount --bind "$cargo_bin" "$R/opt/cargo-bin"
mount -o remount,bind,ro "$R/opt/cargo-bin"
mount --bind "$cache/cargo-registry" "$R/root/.cargo/registry"
mount --bind "$cache/apt-archives" "$R/var/cache/apt/archives"
git clone --quiet --no-checkout "$repo" "$R/root/vmlock"
git -C "$R/root/vmlock" -c advice.detachedHead=false checkout --quiet --detach "$sha"
cp "$run/steps.sh" "$R/root/fresh-steps.sh"
# pivot_root, not chroot: the mount namespaces made inside (the test kit
# runs each daemon in its own) then have the root as their /, as on a real
# machine; under a chroot they show the host's paths (in /proc/PID/exe).
# The host's root is detached with the host's umount (minbase has none).
mkdir -p "$R/.host"
cd "$R"
pivot_root . .host
cd /
/.host/usr/bin/umount -l /.host
rmdir /.host
exec /usr/bin/env -i \
  HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
  PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTUP_HOME=/opt/rustup RUSTUP_TOOLCHAIN="$toolchain" RUSTUP_AUTO_INSTALL=0 \
  CARGO_HOME=/root/.cargo CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never \
  CI="${CI:-}" FRESH_SUITE="$suite" \
  /bin/bash /root/fresh-steps.sh
INSIDE

t1=$SECONDS
set +e
export run base cache repo sha rustup_home cargo_bin toolchain suite
unshare --mount --propagation private --pid --fork --kill-child \
  bash "$run/inside.sh" </dev/null
rc=$?
set -e
if [ "$rc" -eq 0 ]; then
  say "ok: $sha passes on a fresh $SUITE root ($((SECONDS - t1)) s in the root, $((SECONDS - t0)) s in all)"
  exit 0
fi

# Name the missing piece: files the failing step looked for, and the
# package that provides each on this machine. (A grep that finds nothing
# is no error here.)
set +e +o pipefail
step=$(cat "$run/upper/root/fresh-failed-step" 2>/dev/null || echo "setting up the root")
log=$run/upper/root/fresh-step.log
if [ -f "$log" ]; then
  # Build scripts' panics show their messages with escaped newlines.
  sed 's/\\n/\n/g' "$run/upper/root/fresh-step.log" >"$run/step.log"
  log=$run/step.log
  {
    # protoc: "google/protobuf/descriptor.proto: File not found."
    grep -oE '[A-Za-z0-9_./+-]+\.proto: File not found' "$log" | sed 's/: File not found//'
    # C compilers: "fatal error: foo.h: No such file or directory"
    grep -oE 'fatal error: [A-Za-z0-9_./+-]+: No such file' "$log" | sed 's/^fatal error: //; s/: No such file//'
    # linkers: "cannot find -lfoo", "cannot find crt1.o"
    grep -oE 'cannot find -l[A-Za-z0-9_+-]+' "$log" | sed 's/^cannot find -l/lib/; s/$/.so/'
    grep -oE 'cannot find [A-Za-z0-9_]+\.o' "$log" | sed 's/^cannot find //'
    # programs: "linker `cc` not found", "sh: 1: foo: not found"
    grep -oE 'linker `[^`]+` not found' "$log" | sed 's/^linker `//; s/` not found//; s/^cc$/gcc/; s|^|bin/|'
    grep -oE ': [0-9]+: [A-Za-z0-9_.+-]+: not found' "$log" | sed -E 's/^: [0-9]+: //; s/: not found//; s|^|bin/|'
  } | sort -u >"$run/missing"
  while read -r f; do
    [ -n "$f" ] || continue
    p=$(dpkg -S "*/$f" 2>/dev/null | grep -v '^diversion' | head -1 | cut -d: -f1 || true)
    if [ -n "$p" ]; then
      say "missing in the fresh root: $f, which package $p provides on this machine: add $p to scripts/install-deps.sh"
    else
      say "missing in the fresh root: $f"
    fi
  done <"$run/missing"
fi
die "$sha fails on a fresh $SUITE root at step '$step' (after $((SECONDS - t1)) s; the step's output is above)"
