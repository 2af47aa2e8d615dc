#!/bin/sh
# check-man.sh BINARY PAGE: every long option BINARY's --help prints (and,
# for a program with subcommands, each subcommand's --help) and every
# subcommand appear in the roff man page PAGE. Run on the generated pages by
# the package build.
set -eu
bin=$1 page=$2
# roff text with font changes and escaped dashes undone.
text=$(sed -e 's/\\f[BIRPC]//g' -e 's/\\(em/-/g' -e 's/\\-/-/g' "$page")
helps=$("$bin" --help 2>&1)
subs=$(printf '%s\n' "$helps" | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && $1 != "help" && NF { print $1 }')
for s in $subs; do
    helps="$helps
$("$bin" "$s" --help 2>&1)"
    printf '%s\n' "$text" | grep -q -- "$(basename "$bin") $s" || {
        echo "check-man: subcommand \"$s\" of $(basename "$bin") is not in $page" >&2
        exit 1
    }
done
flags=$(printf '%s\n' "$helps" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
[ -n "$flags" ] || { echo "check-man: $bin --help lists no option" >&2; exit 1; }
n=0
for f in $flags; do
    printf '%s\n' "$text" | grep -q -- "$f" || {
        echo "check-man: $f ($(basename "$bin") --help) is not in $page" >&2
        exit 1
    }
    n=$((n + 1))
done
echo "check-man: $n options and $(echo $subs | wc -w) subcommands of $(basename "$bin") are in $page"
