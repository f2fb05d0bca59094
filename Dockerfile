# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as a non-root user in a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY migrations migrations
COPY templates templates
COPY static static
COPY src src
# SQLX_OFFLINE (set in .cargo/config.toml) checks queries against .sqlx/: no database at build time.
RUN cargo build --release --locked && strip target/release/tessera

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin tessera
COPY --from=build /src/target/release/tessera /usr/local/bin/tessera
USER tessera:tessera
ENV TESSERA_LISTEN=0.0.0.0:8080 \
    TESSERA_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz >/dev/null || exit 1
ENTRYPOINT ["tessera"]
CMD ["serve"]
