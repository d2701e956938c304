#!/usr/bin/env bash
# Prints the tag of an image holding this machine's Rust toolchain (the one `rustc` on
# the PATH runs) on the Debian base of tests/image/debian-base.sh, with a C compiler
# for the crates that build C code: the stand-in for the official `rust:` image when
# no registry is reachable. Cached by content: the tag is a hash of this script, the
# base and the toolchain's version.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sysroot=$(rustc --print sysroot)
version=$(rustc -V)
base=$(bash "$here/../image/debian-base.sh" ca-certificates gcc libc6-dev)
hash=$( { cat "$0" /etc/ssl/certs/ca-certificates.crt; echo "$base $version"; } | sha256sum | cut -c1-12)
tag="berth-test/rust:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
ctx=$(mktemp -d /var/tmp/berth-rust-XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/rust"
# The compiler and the standard library; the documentation stays out.
cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
# The certificate authorities this machine trusts, so that cargo reaches crates.io
# from a build container as it does from here (through the same proxies).
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY rust /usr/local/rust
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    CARGO_HOME=/usr/local/cargo
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
