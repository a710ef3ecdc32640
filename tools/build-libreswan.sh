#!/usr/bin/env bash
# Build the vendored Libreswan source tarball (../shared/vendor, beside the
# checkout) into an ignored cache directory of this checkout, for the 5.x test
# tier. pluto compiles its PREFIX in (it execs <PREFIX>/libexec/ipsec/addconn),
# so the build lands where it is run from: <checkout>/.cache/libreswan-<version>.
# A finished build is kept (a stamp file holds the tarball's checksum), so a
# second run only prints the path.
#
# Usage: tools/build-libreswan.sh [VERSION]   (default 5.3.2)
# Prints the install PREFIX on stdout; build output goes to <PREFIX>.log.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
version="${1:-5.3.2}"
tarball="${LIBRESWAN_TARBALL:-$here/../shared/vendor/libreswan-$version.tar.gz}"
prefix="$here/.cache/libreswan-$version"
stamp="$prefix/.built"

if [ ! -r "$tarball" ]; then
    echo "build-libreswan: no source tarball at $tarball" >&2
    exit 1
fi
# The stamp names the tarball and the build's options (a change of either
# rebuilds).
build_format=2
sum="$(sha256sum "$tarball" | cut -d' ' -f1) $build_format"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && [ -x "$prefix/sbin/ipsec" ]; then
    echo "$prefix"
    exit 0
fi

# One build at a time per checkout (parallel pytest workers, make -j).
mkdir -p "$here/.cache"
exec 9>"$here/.cache/libreswan-$version.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && [ -x "$prefix/sbin/ipsec" ]; then
    echo "$prefix"
    exit 0
fi

rm -rf "$prefix" "$prefix.src"
mkdir -p "$prefix.src"
tar -xzf "$tarball" -C "$prefix.src" --strip-components=1
# The options leave out what the tests do not use and the machine lacks
# (DNSSEC, seccomp, labeled IPsec, PAM, audit); documented in
# ../shared/vendor/README.md.
# INSTALL_INITSYSTEM=false and the two systemd directories keep
# install-base inside PREFIX: by default it writes ipsec.service and
# tmpfiles.d/libreswan.conf over the distribution's own (pointing the
# system's ipsec.service at this test build) and runs daemon-reload.
opts=(PREFIX="$prefix" USE_DNSSEC=false USE_SECCOMP=false USE_LABELED_IPSEC=false
      USE_AUTHPAM=false USE_LINUX_AUDIT=false INSTALL_INITSYSTEM=false
      SYSTEMUNITDIR="$prefix/lib/systemd/system" SYSTEMTMPFILESDIR="$prefix/lib/tmpfiles.d")
echo "build-libreswan: building $version into $prefix (log: $prefix.log)" >&2
if ! { make -C "$prefix.src" -j"$(nproc)" base "${opts[@]}" &&
       make -C "$prefix.src" install-base "${opts[@]}"; } >"$prefix.log" 2>&1; then
    tail -30 "$prefix.log" >&2
    echo "build-libreswan: build failed, full log in $prefix.log" >&2
    exit 1
fi
rm -rf "$prefix.src"
echo "$sum" >"$stamp"
echo "$prefix"
