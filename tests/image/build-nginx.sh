#!/usr/bin/env bash
# Builds TAG: Debian's nginx binary and the libraries it links, from scratch, so the
# tests can run nginx inside Docker (reaching apps by container name) with no registry.
set -euo pipefail
tag=${1:?usage: build-nginx.sh TAG}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "build-nginx.sh: nginx is not installed (Debian's nginx-light)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/usr/sbin" "$ctx/root/etc" "$ctx/root/tmp" "$ctx/root/var/log/nginx" "$ctx/root/var/lib/nginx"
cp "$nginx" "$ctx/root/usr/sbin/nginx"
for lib in $(ldd "$nginx" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/root$(dirname "$lib")"
    cp -L "$lib" "$ctx/root$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$ctx/root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >> "$ctx/root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/root/etc/group"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root /
ENTRYPOINT ["/usr/sbin/nginx", "-g", "daemon off;"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null 2>&1
