#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent).
#   libvirt-daemon    the reference virtlockd 9.0 and libvirt's lockd.so plugin
#   libvirt-clients   virt-admin, which the admin tests drive against both daemons; virsh, which
#                     vmlockd/tests/libvirt_cluster.rs drives two libvirtd "hosts" with
#   libvirt-daemon-driver-qemu  libvirtd's QEMU driver, for the two-host libvirt test
#   qemu-system-x86   the (TCG) guests of the two-host libvirt test, and the guest scripts/vm-run.sh boots
#   etcd-server       private etcd instances for the cluster back end's tests
#   protobuf-compiler protoc, needed to build the etcd client
#   libprotobuf-dev   the well-known .proto files (google/protobuf/*.proto) protoc needs for the etcd client
#   python3           used by a few tests as an independent second process
#   openssl           the etcd TLS tests make their CA and certificates with it
#   sanlock           the sanlock daemon (and its client library) for the sanlock driver's tests
#   libvirt-sanlock   libvirt's own sanlock.so plugin, the sanlock driver's reference
#   gcc               cc, the linker rustc uses; also compiles the test-only rlimit shim the sanlock daemon runs with
#   libc6-dev         the C library's startup files and headers cc links and compiles with (only recommended by gcc)
#   dpkg-dev          dpkg-buildpackage, which scripts/build-deb.sh builds the vmlock package with
#   build-essential   dpkg-buildpackage refuses to build without it (an implied build dependency)
#   debhelper         the package's debian/rules (dh, dpkg-shlibdeps for Depends, dpkg-divert scripts)
#   go-md2man         renders docs/man/*.md to the package's roff man pages
#   lintian           checks the package (scripts/build-deb.sh fails on its errors and warnings)
#   prometheus        promtool, which checks vmlockd's metrics output in vmlockd/tests/metrics.rs
#                     (and the prometheus server, which scrapes the daemon in the same file)
#                     (the package's server is not started by the tests; ~96 MB installed)
#   libdlm3           libdlm_lt.so.3, which the DLM back end (lock_backend = "dlm") loads at run time
#   corosync          the single-node cluster scripts/vm/dlm-test.sh starts inside the guest
#   dlm-controld      dlm_controld and dlm_tool for that guest test (the host kernel has no DLM)
#   valgrind          callgrind, which scripts/bench-instructions.sh counts instructions per request with
#   cpio              packs the initramfs of the guest scripts/vm-run.sh boots for that test
# scripts/fresh-root.sh checks this list on a root made from Debian's packages alone.
set -euo pipefail
pkgs=(libvirt-daemon libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 etcd-server protobuf-compiler libprotobuf-dev python3 openssl sanlock libvirt-sanlock gcc libc6-dev dpkg-dev build-essential debhelper go-md2man lintian prometheus libdlm3 corosync dlm-controld cpio valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
