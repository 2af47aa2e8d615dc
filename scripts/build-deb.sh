#!/usr/bin/env bash
# Builds the Debian package vmlock (vmlockd, vmlockctl, man pages, the live
# hand-over in the maintainer scripts; see debian/) from the checkout's
# tracked and new files, with dpkg-buildpackage and debhelper, and checks it
# with lintian. Cargo's output is kept in target/ (target/release is shared
# with ordinary release builds); the package lands in target/deb/. The last
# line printed is the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CARGO_INCREMENTAL=0

version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' Cargo.toml)
changelog=$(dpkg-parsechangelog -l debian/changelog -S Version)
if [ "$version" != "$changelog" ]; then
    echo "build-deb: the workspace is version $version but debian/changelog's last entry is" \
        "$changelog: add an entry (dch -v $version)" >&2
    exit 1
fi

out=$repo/target/deb
stage=$out/vmlock-$version
rm -rf "$stage"
mkdir -p "$stage"
# A clean tree: what git tracks plus new files it does not ignore, nothing built.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        tar -c --null --ignore-failed-read -T - -f - 2>/dev/null | tar -x -C "$stage"
else
    tar -c --exclude=./target -f - . | tar -x -C "$stage"
fi

arch=$(dpkg --print-architecture)
deb=$out/vmlock_${version}_${arch}.deb
rm -f "$deb" "$out"/vmlock_"${version}"_"${arch}".{buildinfo,changes}
(cd "$stage" && CARGO_TARGET_DIR=$repo/target dpkg-buildpackage -b --no-sign >&2)
rm -rf "$stage"
[ -f "$deb" ] || { echo "build-deb: $deb was not built" >&2; exit 1; }
lintian --fail-on error,warning \
    "$out/vmlock_${version}_${arch}.changes" >&2
echo "$deb"
