#!/usr/bin/env bash
# Order throughput next to pgbench on the same Postgres with the same client count.
#
# For each client count: starts a release capex-server on a fresh database, runs
# capex-loadgen against it, stops the server, then runs pgbench (TPC-B-like) with as many
# clients on fresh databases at two scales; prints a row per count.
#   - scale 1 is pgbench's default: every transaction updates the one branch row, so with
#     many clients it measures that row lock more than Postgres.
#   - scale = clients is what pgbench's documentation asks for (scale >= clients): the
#     fair comparison, and the one the target is judged on.
#   CLIENTS ("16 32 64": one run per count)  SECONDS (20)
#   MARKETS (1: one book; N spreads the clients over N markets)
#   CLIENT_NICE (0): nice level of both load clients (capex-loadgen and pgbench), to see the
#   servers' capacity when the clients share their cores
#   DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres)
# Target: orders/s >= 2 x pgbench TPS (scale = clients) with p99 < 50 ms.
set -euo pipefail

CLIENT_COUNTS="${CLIENTS:-16 32 64}"
CLIENT_NICE="${CLIENT_NICE:-0}"
MARKETS="${MARKETS:-1}"
SECONDS_RUN="${SECONDS:-20}"
ADMIN_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${ADMIN_URL%/*}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PORT="${PORT:-18080}"

cd "$ROOT"
cargo build --release -p capex-server --bin capex-server -p capex-e2e --bin capex-loadgen >&2

SERVER_PID=""
DATABASES=()
cleanup() {
    stop_server
    for db in "${DATABASES[@]}"; do
        psql "$ADMIN_URL" -qc "drop database if exists $db" >/dev/null 2>&1 || true
    done
}
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap cleanup EXIT

# Creates a database named after $1 (dropped on exit) and sets DB to its name.
fresh_database() {
    DB="$1_$(date +%s%N)_$$"
    psql "$ADMIN_URL" -qc "create database $DB" >/dev/null
    DATABASES+=("$DB")
}

# Sets TPS to pgbench's with $1 clients at scale $2, on a fresh database.
run_pgbench() {
    local out
    fresh_database pgbench
    pgbench -i -q -s "$2" "$BASE_URL/$DB" >/dev/null 2>&1
    out="$(nice -n "$CLIENT_NICE" pgbench -c "$1" -j 2 -T "$SECONDS_RUN" -n "$BASE_URL/$DB" 2>&1)"
    psql "$ADMIN_URL" -qc "drop database if exists $DB" >/dev/null 2>&1 || true
    TPS="$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)"
    [[ -n "$TPS" ]] || { echo "pgbench failed: $out" >&2; exit 1; }
}

ROWS=()
for CLIENT_COUNT in $CLIENT_COUNTS; do
    fresh_database capex_bench
    APP_DB="$DB"
    DATABASE_URL="$BASE_URL/$APP_DB" CAPEX_BIND="127.0.0.1:$PORT" \
    CAPEX_JWT_SECRET="bench-secret-bench-secret-bench-secret!" \
    CAPEX_OPERATOR_EMAIL="operator@e2e.test" CAPEX_OPERATOR_PASSWORD="operator password e2e" \
    CAPEX_DB_POOL_MAX="$((CLIENT_COUNT + 8))" RUST_LOG=warn \
        "$TARGET/release/capex-server" >/dev/null &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done

    LOADGEN="$(nice -n "$CLIENT_NICE" "$TARGET/release/capex-loadgen" --url "http://127.0.0.1:$PORT" \
        --database-url "$BASE_URL/$APP_DB" --clients "$CLIENT_COUNT" --seconds "$SECONDS_RUN" --markets "$MARKETS")"
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
    # pgbench gets Postgres (and the machine) to itself.
    stop_server

    run_pgbench "$CLIENT_COUNT" 1
    TPS_1="$TPS"
    run_pgbench "$CLIENT_COUNT" "$CLIENT_COUNT"
    TPS_N="$TPS"
    echo "pgbench: clients=$CLIENT_COUNT tps_scale_1=$TPS_1 tps_scale_$CLIENT_COUNT=$TPS_N"

    ORDERS_S="$(echo "$LOADGEN" | sed -n 's/.*orders_per_s=\([0-9.]*\).*/\1/p')"
    P50="$(echo "$LOADGEN" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')"
    P99="$(echo "$LOADGEN" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
    ROWS+=("$(awk -v c="$CLIENT_COUNT" -v o="$ORDERS_S" -v t1="$TPS_1" -v tn="$TPS_N" -v p50="$P50" -v p="$P99" 'BEGIN {
        r1 = o / t1; rn = o / tn
        printf "%7d %10.0f %7.2f %7.2f %10.0f %6.2f %10.0f %6.2f   %s", c, o, p50, p, t1, r1, tn, rn,
            (rn >= 2 && p < 50) ? "MET" : "NOT MET" }')")
done

echo
echo "orders/s against pgbench TPC-B TPS ($MARKETS market(s), ${SECONDS_RUN} s each)"
echo "target: orders/s >= 2 x pgbench TPS at scale = clients, with p99 < 50 ms"
printf '%7s %10s %7s %7s %10s %6s %10s %6s   %s\n' clients "orders/s" "p50 ms" "p99 ms" "tps s=1" ratio \
    "tps s=cl" ratio target
for row in "${ROWS[@]}"; do
    echo "$row"
done
