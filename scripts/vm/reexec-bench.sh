# Guest side of scripts/vm-run.sh: the re-exec benchmark past the host's
# descriptor limit. Runs as root in the guest, from the project directory.
#   scripts/vm-run.sh --mem 16G scripts/vm/reexec-bench.sh [--bin-dir DIR] \
#       --ours 10000,100000 --theirs 10000,100000 --rounds 3
# DIR (default target/release) holds vmlockd and vmlock-reexec-bench, built
# on the host first: cargo build --release --workspace --bins
set -e
bin=$PWD/target/release
if [ "$1" = --bin-dir ]; then bin=$2; shift 2; fi
echo 4194304 > /proc/sys/fs/nr_open
ulimit -Hn 4194304
ulimit -n 4194304
export VMLOCKD_BIN="$bin/vmlockd"
exec "$bin/vmlock-reexec-bench" "$@"
