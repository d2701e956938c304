# berth as a container: `docker build -t berth .`
#
# The runtime stage comes first so that it can be built alone (`--target runtime`);
# the last stage is the image: the runtime with the berth binary built in between.
# The base images are build arguments: the defaults are Docker's official images, and
# a host without a registry passes images of its own (see tests/container/).
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# --- runtime: what berth calls, a user of its own, the state dir, the health check ---
FROM ${RUNTIME_IMAGE} AS runtime
# git and ssh for Git sources over ssh://, the PostgreSQL and MariaDB clients for
# backups of shared databases, curl for the health check. nginx is optional: pass
# --build-arg WITH_NGINX=true when berth should run nginx inside this container
# (usually nginx runs on the host, or Traefik in a container of its own).
ARG WITH_NGINX=false
RUN set -eu; \
    packages="ca-certificates curl git openssh-client postgresql-client mariadb-client"; \
    if [ "$WITH_NGINX" = true ]; then packages="$packages nginx-light"; fi; \
    missing=""; \
    for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 berth; \
    useradd --no-create-home --uid 10001 --gid berth --home-dir /var/lib/berth --shell /usr/sbin/nologin berth; \
    mkdir -p /var/lib/berth; \
    chown berth:berth /var/lib/berth; \
    chmod 0700 /var/lib/berth
# Non-root: give the container the group of the Docker socket
# (`--group-add "$(stat -c %g /var/run/docker.sock)"`).
USER berth
ENV BERTH_STATE_DIR=/var/lib/berth \
    BERTH_LISTEN=0.0.0.0:9470
VOLUME ["/var/lib/berth"]
EXPOSE 9470
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS "http://$(echo "$BERTH_LISTEN" | sed 's/^0\.0\.0\.0:/127.0.0.1:/; s/^\[::\]:/[::1]:/')/healthz" >/dev/null || exit 1
ENTRYPOINT ["berth"]
CMD ["run"]

# --- build: a release binary, from the locked dependencies ---
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth \
    && strip target/release/berth

# --- the image ---
FROM runtime
COPY --from=build /src/target/release/berth /usr/local/bin/berth
