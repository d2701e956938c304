#!/usr/bin/env bash
# Builds berth's own image from the root Dockerfile, whole (the release build in the
# Rust stage included), with base images made on this machine since no registry is
# reachable, and times it. The image is cached by content: its tag is a hash of the
# files the build reads and of the base images, and a second run with the same inputs
# reuses it. Then it runs the image's own checks: `berth --version`, the user, and the
# health check answering in a running container. Prints the tag and the timings.
#   usage: tests/container/build-image.sh        (from anywhere in the repository)
# What differs from a build with the official images: the Rust stage is this machine's
# toolchain (`rustc -V`) on a Debian bookworm made with debootstrap instead of
# `rust:1-bookworm`, and the runtime is a debootstrapped bookworm that already holds
# the packages the Dockerfile would install on `debian:bookworm-slim`. Crates come from
# crates.io as in any build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$(date +%s)
runtime=$(bash "$here/../image/debian-base.sh" ca-certificates curl git openssh-client \
    postgresql-client mariadb-client)
rust=$(bash "$here/rust-image.sh")
bases=$(( $(date +%s) - start ))
inputs=$(cd "$repo" && git ls-files -z -- Cargo.toml Cargo.lock Dockerfile .dockerignore src \
    benches tests state-repo-template schemas | xargs -0 sha256sum | sha256sum | cut -c1-12)
hash=$(echo "$inputs $runtime $rust" | sha256sum | cut -c1-12)
tag="berth-test/berth-image:$hash"
built=cached
if ! docker image inspect "$tag" >/dev/null 2>&1; then
    begin=$(date +%s)
    docker build -q -t "$tag" \
        --build-arg "RUNTIME_IMAGE=$runtime" --build-arg "RUST_IMAGE=$rust" \
        "$repo" >/dev/null
    built="$(( $(date +%s) - begin )) s"
fi
docker run --rm "$tag" --version
[ "$(docker run --rm --entrypoint id "$tag" -un)" = berth ]
name="berth-image-check-$$"
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" -v /var/run/docker.sock:/var/run/docker.sock \
    --group-add "$(stat -c %g /var/run/docker.sock)" "$tag" run --source /srv >/dev/null
for _ in $(seq 1 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$name")
    [ "$health" = healthy ] && break
    sleep 1
done
[ "$health" = healthy ] || { docker logs "$name"; echo "the container is $health" >&2; exit 1; }
echo "image $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
echo "base images: ${bases} s; image build: $built; health check: $health"
