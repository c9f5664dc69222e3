# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full toolchain, ship a small image with the binary only.

FROM rust:1.95-slim-bookworm AS build
# OpenSSL for the HTTPS client of `api` data sources.
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The allocator's compile-time settings (.cargo/config.toml) apply to the dependency build too.
COPY .cargo ./.cargo
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && printf 'fn main() {}\n' > benches/formula.rs \
    && cargo build --release --locked --bin panels || true
COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin panels

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home panels
COPY --from=build /src/target/release/panels /usr/local/bin/panels
USER panels
ENV APP_ENV=production HOST=0.0.0.0 PORT=3001 LOG_FORMAT=json
EXPOSE 3001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3001/health || exit 1
ENTRYPOINT ["/usr/local/bin/panels"]
CMD ["serve"]
