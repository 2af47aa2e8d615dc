#!/bin/sh
# gen-man.sh PAGE.md OUT VERSION: renders a man page of docs/man/ to roff with
# go-md2man. The pages start with a pandoc title block,
# "% NAME(SECTION) source | manual", which go-md2man copies as it is; it is
# turned into a proper .TH line here.
set -eu
src=$1 out=$2 version=$3
title=$(head -n 1 "$src")
case "$title" in
    "% "*"("*")"*"|"*) ;;
    *) echo "gen-man: $src: first line is not \"% NAME(SECTION) source | manual\"" >&2; exit 1 ;;
esac
rest=${title#% }
name=${rest%%(*}
section=${rest#*(}; section=${section%%)*}
manual=${rest#*| }
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)
go-md2man -in "$src" |
    sed "s|^\.TH .*|.TH \"$name\" \"$section\" \"$date\" \"vmlock $version\" \"$manual\"|" >"$out.tmp"
grep -q '^\.TH "' "$out.tmp" || { echo "gen-man: no .TH line in $out" >&2; exit 1; }
mv "$out.tmp" "$out"
