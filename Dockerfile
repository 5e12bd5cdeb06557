# syntax=docker/dockerfile:1
# One image, one `gatehouse` binary: the gateway and every service run from it with a different
# command (compose.yaml, deploy/k8s/). docs/DEPLOY.md explains each choice.

# --- dependencies, cached: cargo-chef builds the dependency graph from the manifests alone, so
# a source change rebuilds only the workspace's own crates, not the ~400 dependencies.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package gatehouse
COPY . .
RUN cargo build --release --locked --package gatehouse --bin gatehouse \
    && install -D -m 0755 target/release/gatehouse /out/gatehouse \
    && install -d -m 0750 /out/data

# --- runtime: glibc and CA roots only, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gatehouse" \
      org.opencontainers.image.description="API gateway with centralized authentication, and the services behind it" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/gatehouse/gatehouse" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/gatehouse /usr/local/bin/gatehouse
# The routes file the image starts with; a deployment mounts its own (a ConfigMap) over it.
COPY --chown=65532:65532 config/gateway.yaml /etc/gatehouse/gateway.yaml
# SQLite files for a single-container demo; real deployments use PostgreSQL (GATEHOUSE_STORE,
# GATEHOUSE_DATABASE_URL) and this stays empty. Everything else is read-only.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/gatehouse
VOLUME ["/var/lib/gatehouse"]
WORKDIR /var/lib/gatehouse
USER 65532:65532
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gateway.yaml \
    GATEHOUSE_DATA_DIR=/var/lib/gatehouse \
    GATEHOUSE_LISTEN=0.0.0.0:8001 \
    GATEHOUSE_ADMIN_LISTEN=0.0.0.0:8002 \
    GATEHOUSE_LOG_FORMAT=json
EXPOSE 8001 8002
# No shell or curl in the image: the binary probes itself. Services override the URL.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/gatehouse", "probe", "http://127.0.0.1:8001/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["gateway"]
