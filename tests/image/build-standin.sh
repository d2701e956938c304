#!/usr/bin/env bash
# Builds a stand-in for an official database image (no registry is reachable here):
# berth's busybox test image plus a health-check command of the given name that
# succeeds, tagged TAG (e.g. postgres:16-berthtest). It runs busybox httpd, not the
# engine: tests of managed databases check the container berth creates, not the engine.
set -euo pipefail
tag=${1:?usage: build-standin.sh TAG BASE CHECK}
base=${2:?usage: build-standin.sh TAG BASE CHECK}
check=${3:?usage: build-standin.sh TAG BASE CHECK}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
printf '#!/bin/sh\nexit 0\n' > "$ctx/check"
chmod +x "$ctx/check"
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY check /usr/local/bin/$check
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
