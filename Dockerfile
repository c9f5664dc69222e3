# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full toolchain, ship a small image with the binary only.
# TLS is rustls throughout (no OpenSSL to build against or ship); the runtime image needs only
# the CA certificates.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The allocator's compile-time settings (.cargo/config.toml) apply to the dependency build too.
COPY .cargo ./.cargo
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# BuildKit caches the registry and the target directory between builds, so a source edit
# recompiles the crate only, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin panels \
    && cp target/release/panels /usr/local/bin/panels

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent panels
COPY --from=build /usr/local/bin/panels /usr/local/bin/panels
# Numeric, so an orchestrator can verify runAsNonRoot.
USER 10001:0
ENV APP_ENV=production HOST=0.0.0.0 PORT=3001 LOG_FORMAT=json
EXPOSE 3001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/panels"]
CMD ["serve"]
