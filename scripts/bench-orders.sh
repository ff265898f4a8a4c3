#!/usr/bin/env bash
# Order throughput next to pgbench on the same Postgres with the same client count.
#
# Starts a release capex-server on a fresh database, runs capex-loadgen against it, then
# runs pgbench (TPC-B-like) on another fresh database, and prints both side by side.
#   CLIENTS (16)  SECONDS (20)  MARKETS (1: one book; N spreads the clients over N markets)
#   CLIENT_NICE (0): nice level of both load clients (capex-loadgen and pgbench), to see the
#   servers' capacity when the clients share their cores
#   DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres)
# Target: orders/s >= 2 x pgbench TPS with p99 < 50 ms.
set -euo pipefail

CLIENTS="${CLIENTS:-16}"
CLIENT_NICE="${CLIENT_NICE:-0}"
MARKETS="${MARKETS:-1}"
SECONDS_RUN="${SECONDS:-20}"
ADMIN_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${ADMIN_URL%/*}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SUFFIX="$(date +%s)_$$"
APP_DB="capex_bench_${SUFFIX}"
PGBENCH_DB="pgbench_${SUFFIX}"
PORT="${PORT:-18080}"

cd "$ROOT"
cargo build --release -p capex-server --bin capex-server -p capex-e2e --bin capex-loadgen >&2

psql "$ADMIN_URL" -qc "create database $APP_DB" >/dev/null
psql "$ADMIN_URL" -qc "create database $PGBENCH_DB" >/dev/null
cleanup() {
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    psql "$ADMIN_URL" -qc "drop database if exists $APP_DB" >/dev/null 2>&1 || true
    psql "$ADMIN_URL" -qc "drop database if exists $PGBENCH_DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

DATABASE_URL="$BASE_URL/$APP_DB" CAPEX_BIND="127.0.0.1:$PORT" \
CAPEX_JWT_SECRET="bench-secret-bench-secret-bench-secret!" \
CAPEX_OPERATOR_EMAIL="operator@e2e.test" CAPEX_OPERATOR_PASSWORD="operator password e2e" \
CAPEX_DB_POOL_MAX="$((CLIENTS + 8))" RUST_LOG=warn \
    "$TARGET/release/capex-server" >/dev/null &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done

LOADGEN="$(nice -n "$CLIENT_NICE" "$TARGET/release/capex-loadgen" --url "http://127.0.0.1:$PORT" --database-url "$BASE_URL/$APP_DB" \
    --clients "$CLIENTS" --seconds "$SECONDS_RUN" --markets "$MARKETS")"
echo "$LOADGEN"
# Where a batch's time went (means over the run), from the server's own metrics.
curl -fs "http://127.0.0.1:$PORT/metrics" | awk '
    /^capex_matcher_phase_seconds_(sum|count)/ {
        match($0, /phase="[a-z]+"/); phase = substr($0, RSTART + 7, RLENGTH - 8)
        if ($0 ~ /_sum/) sum[phase] = $NF; else count[phase] = $NF
    }
    /^capex_matcher_batch_size_sum/ { bs = $NF } /^capex_matcher_batch_size_count/ { bc = $NF }
    END {
        printf "matcher: batches=%d mean_batch_size=%.1f mean ms per phase:", bc, (bc ? bs / bc : 0)
        for (p in sum) printf " %s=%.3f", p, (count[p] ? 1000 * sum[p] / count[p] : 0)
        printf "\n"
    }'

pgbench -i -q -s 1 "$BASE_URL/$PGBENCH_DB" >/dev/null 2>&1
PGBENCH="$(nice -n "$CLIENT_NICE" pgbench -c "$CLIENTS" -j 2 -T "$SECONDS_RUN" -n "$BASE_URL/$PGBENCH_DB" 2>/dev/null)"
TPS="$(echo "$PGBENCH" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)"
PG_LAT="$(echo "$PGBENCH" | sed -n 's/^latency average = \(.*\)$/\1/p')"

ORDERS_S="$(echo "$LOADGEN" | sed -n 's/.*orders_per_s=\([0-9.]*\).*/\1/p')"
P50="$(echo "$LOADGEN" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')"
P99="$(echo "$LOADGEN" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
echo
printf '%-28s %12s %10s %10s\n' "" "per second" "p50 ms" "p99 ms"
printf '%-28s %12s %10s %10s\n' "capex orders ($CLIENTS cl, $MARKETS mkt)" "$ORDERS_S" "$P50" "$P99"
printf '%-28s %12s %10s %10s\n' "pgbench TPC-B ($CLIENTS clients)" "$TPS" "avg $PG_LAT" ""
awk -v o="$ORDERS_S" -v t="$TPS" -v p="$P99" 'BEGIN {
    r = o / t; printf "ratio orders/s : pgbench TPS = %.2f (target >= 2), p99 %s ms (target < 50): %s\n",
        r, p, (r >= 2 && p < 50) ? "MET" : "NOT MET" }'
