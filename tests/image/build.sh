#!/usr/bin/env bash
# Builds berth's test image as TAG: busybox's httpd serving tests/image/www, from
# scratch with the static busybox of Debian's busybox-static package.
set -euo pipefail
tag=${1:?usage: build.sh TAG}
here=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r "$here/Dockerfile" "$here/www" "$ctx/"
if ! cp /bin/busybox "$ctx/busybox" 2>/dev/null; then
    echo "build.sh: /bin/busybox is missing: install Debian's busybox-static" >&2
    exit 1
fi
docker build -q -t "$tag" "$ctx" >/dev/null
