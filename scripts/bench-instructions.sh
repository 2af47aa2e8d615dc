#!/bin/sh
# bench-instructions.sh [VMLOCKD] [BENCH]: user-space instructions per
# request of vmlockd, with Prometheus metrics off and on, in one run.
#
# For each setting, vmlockd runs under callgrind and `vmlock-bench raw-own
# --clients 4` drives it twice: 500 and 5,500 acquire/release cycles per
# client. The difference of the two `summary:` totals over the 2 x 20,000
# extra requests is the cost of one request (start-up, connections and
# shutdown cancel out). Load-independent, unlike the rates of `compare`.
# Needs valgrind. Prints one line per setting and the ratio on/off.
set -eu
vmlockd=${1:-target/release/vmlockd}
bench=${2:-target/release/vmlock-bench}
W=$(mktemp -d "${TMPDIR:-/tmp}/vmlock-instr-XXXXXX")
trap 'rm -rf "$W"' EXIT

# instructions SETTING MAX_OPS: the callgrind total of one daemon run.
instructions() {
    d=$W/$1-$2
    mkdir -p "$d/run" "$d/xdg" "$d/files"
    printf 'unix_sock_dir = "%s/run"\n' "$d" >"$d/conf"
    if [ "$1" = on ]; then
        printf 'metrics_listen = "%s/run/m.sock"\n' "$d" >>"$d/conf"
    fi
    XDG_RUNTIME_DIR=$d/xdg valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
        "$vmlockd" -f "$d/conf" -p "$d/pid" 2>"$d/log" &
    pid=$!
    i=0
    while [ ! -S "$d/run/virtlockd-sock" ]; do
        i=$((i + 1))
        [ $i -lt 600 ] || { echo "vmlockd did not start: $(cat "$d/log")" >&2; exit 1; }
        sleep 0.1
    done
    "$bench" raw-own --socket "$d/run/virtlockd-sock" --clients 4 --duration 600 \
        --max-ops "$2" --files-dir "$d/files" >/dev/null
    kill "$pid"
    wait "$pid" || true
    sed -n 's/^summary: //p' "$d/cg.out"
}

for setting in off on; do
    small=$(instructions $setting 500)
    large=$(instructions $setting 5500)
    per=$(( (large - small) / 40000 ))
    echo "metrics $setting: $per instructions per request"
    eval "per_$setting=$per"
done
awk -v on="$per_on" -v off="$per_off" \
    'BEGIN { printf "on/off: %.3f (%+d instructions per request)\n", on / off, on - off }'
