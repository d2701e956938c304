#!/usr/bin/env bash
# Prints the tag of a Debian (bookworm) base image holding PACKAGES, made here with
# debootstrap and `docker import`, since no registry is reachable. The image is cached
# by content: its tag is a hash of this script and the package list, and it is reused
# while the daemon holds it (a first build takes a few minutes, a reuse none).
#   usage: debian-base.sh [PACKAGE...]     e.g. debian-base.sh ca-certificates git
set -euo pipefail
suite=bookworm
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
hash=$( { cat "$0"; echo "$suite $packages"; } | sha256sum | cut -c1-12)
tag="berth-test/debian:$suite-$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "debian-base.sh: debootstrap is not installed (Debian's debootstrap package)" >&2
    exit 1
}
root=$(mktemp -d /var/tmp/berth-debian-XXXXXX)
trap 'rm -rf "$root"' EXIT
include=()
[ -n "$packages" ] && include=(--include="$packages")
debootstrap --variant=minbase "${include[@]}" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    echo "debian-base.sh: debootstrap failed; its last lines:" >&2
    tail -n 20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
# A smaller image: no package lists or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "$tag"
