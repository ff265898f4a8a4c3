# Multi-stage build of the Capex binaries and the web UI: the same commands as
# ./scripts/start (npm ci && npm run build; cargo build), in release mode.

FROM node:20-bookworm AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:1.95-bookworm AS rust
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/capex capex \
 && mkdir -p /var/lib/capex/agent && chown -R capex /var/lib/capex
COPY --from=rust /src/target/release/capex-server /src/target/release/capex /usr/local/bin/
COPY --from=rust /src/target/release/capex-agent /usr/local/bin/
COPY --from=web /src/web/dist /usr/share/capex/web
ENV CAPEX_WEB_DIR=/usr/share/capex/web \
    CAPEX_BIND=0.0.0.0:8080 \
    CAPEX_LOG_FORMAT=json
USER capex
WORKDIR /var/lib/capex
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["capex-server"]
