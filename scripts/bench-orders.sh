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
#   SLOW_FLUSH_US (unset): run both loads on a private cluster (this machine's PostgreSQL
#   binaries, default settings) whose every fsync/fdatasync first waits this many
#   microseconds (scripts/bench/slow-flush.c), to see what slower commits do to each side
# Target: orders/s >= 2 x pgbench TPS (scale = clients) with p99 < 50 ms.
#
# It also prints the CPU each side spent per acknowledged order and per pgbench transaction
# (from /proc, sampled while the load runs; Postgres is counted only when it runs on this
# machine), and how little CPU an order may take for 2x when every core is busy.
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
SLOW_CLUSTER=""
RUN_AS=()
stop_slow_cluster() {
    if [[ -n "$SLOW_CLUSTER" ]]; then
        "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$SLOW_CLUSTER/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$SLOW_CLUSTER"
    fi
}
if [[ -n "${SLOW_FLUSH_US:-}" ]]; then
    PG_BIN="$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    SLOW_CLUSTER="$(mktemp -d)"
    trap stop_slow_cluster EXIT
    cc -shared -fPIC -O2 -o "$SLOW_CLUSTER/slow-flush.so" scripts/bench/slow-flush.c -ldl
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres "$SLOW_CLUSTER"
        RUN_AS=(runuser -u postgres --)
    fi
    SLOW_PORT="${SLOW_FLUSH_PORT:-5499}"
    "${RUN_AS[@]}" "$PG_BIN/initdb" -D "$SLOW_CLUSTER/data" -A trust -U postgres >/dev/null
    "${RUN_AS[@]}" env SLOW_FLUSH_US="$SLOW_FLUSH_US" LD_PRELOAD="$SLOW_CLUSTER/slow-flush.so" \
        "$PG_BIN/pg_ctl" -D "$SLOW_CLUSTER/data" -l "$SLOW_CLUSTER/log" -w \
        -o "-p $SLOW_PORT -k $SLOW_CLUSTER -c listen_addresses=127.0.0.1" start >/dev/null
    ADMIN_URL="postgres://postgres@127.0.0.1:$SLOW_PORT/postgres"
    BASE_URL="${ADMIN_URL%/*}"
    echo "private cluster at $ADMIN_URL: every flush waits ${SLOW_FLUSH_US} us first" >&2
fi
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
trap 'cleanup; stop_slow_cluster' EXIT

# Creates a database named after $1 (dropped on exit) and sets DB to its name.
fresh_database() {
    DB="$1_$(date +%s%N)_$$"
    psql "$ADMIN_URL" -qc "create database $DB" >/dev/null
    DATABASES+=("$DB")
}

# Sets TPS to pgbench's with $1 clients at scale $2, on a fresh database.
run_pgbench() {
    fresh_database pgbench
    pgbench -i -q -s "$2" "$BASE_URL/$DB" >/dev/null 2>&1
    run_sampled nice -n "$CLIENT_NICE" pgbench -c "$1" -j 2 -T "$SECONDS_RUN" -n "$BASE_URL/$DB"
    psql "$ADMIN_URL" -qc "drop database if exists $DB" >/dev/null 2>&1 || true
    TPS="$(echo "$OUT" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)"
    [[ -n "$TPS" ]] || { echo "pgbench failed: $OUT" >&2; exit 1; }
}

CPUS="$(nproc)"
TICK_MS="$((1000 / $(getconf CLK_TCK)))"
WARMUP_S=2
WINDOW_S="$((SECONDS_RUN > WARMUP_S + 4 ? SECONDS_RUN - WARMUP_S - 2 : 1))"

# "GROUP PID TICKS" lines (user + system ticks, every thread) of the load client ($1), the
# server and every Postgres process on this machine, then "idle - TICKS" of the machine. One
# read of them all, so that both samples are quick and close to the load's edges.
cpu_sample() {
    # A process that ends meanwhile is skipped: cat goes on past a file it cannot open.
    # shellcheck disable=SC2046 # one path per pid
    cat "/proc/$1/stat" ${SERVER_PID:+"/proc/$SERVER_PID/stat"} $(pgrep -x postgres | sed 's|.*|/proc/&/stat|') \
        2>/dev/null | awk -v client="$1" -v server="${SERVER_PID:-none}" '{
            group = $1 == client ? "client" : ($1 == server ? "server" : "postgres")
            print group, $1, $14 + $15 }' || true
    awk '/^cpu /{print "idle -", $5}' /proc/stat
}

# Runs "$@" (a load client) in the background and samples CPU from WARMUP_S after its start
# for WINDOW_S; sets OUT (its output) and CPU ("client server postgres idle" ticks in the
# window). A process that ends inside the window (an autovacuum worker) is not counted; one
# that starts inside it is, whole.
run_sampled() {
    local file pid before after
    file="$(mktemp)"
    "$@" >"$file" 2>&1 &
    pid=$!
    sleep "$WARMUP_S"
    before="$(cpu_sample "$pid")"
    sleep "$WINDOW_S"
    after="$(cpu_sample "$pid")"
    wait "$pid" || { cat "$file" >&2; rm -f "$file"; exit 1; }
    OUT="$(cat "$file")"
    rm -f "$file"
    CPU="$(awk 'NR == FNR { start[$1 " " $2] = $3; next }
        { sum[$1] += $3 - start[$1 " " $2] }
        END { printf "%d %d %d %d", sum["client"], sum["server"], sum["postgres"], sum["idle"] }' \
        <(echo "$before") <(echo "$after"))"
}

# "ms per unit" of each of the four tick counts in $1 at $2 units/s over the window.
per_unit_ms() {
    echo "$1" | awk -v rate="$2" -v w="$WINDOW_S" -v t="$TICK_MS" -v cpus="$CPUS" '{
        n = rate * w; if (n <= 0) n = 1
        printf "%.3f %.3f %.3f %.3f %.0f", $1 * t / n, $2 * t / n, $3 * t / n, ($1 + $2 + $3) * t / n,
            100 * $4 / (w * 100 * cpus) }'
}

ROWS=()
CPU_ROWS=()
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

    run_sampled nice -n "$CLIENT_NICE" "$TARGET/release/capex-loadgen" --url "http://127.0.0.1:$PORT" \
        --database-url "$BASE_URL/$APP_DB" --clients "$CLIENT_COUNT" --seconds "$SECONDS_RUN" --markets "$MARKETS"
    LOADGEN="$OUT"
    LOADGEN_CPU="$CPU"
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
    PGBENCH_CPU="$CPU"
    echo "pgbench: clients=$CLIENT_COUNT tps_scale_1=$TPS_1 tps_scale_$CLIENT_COUNT=$TPS_N"

    ORDERS_S="$(echo "$LOADGEN" | sed -n 's/.*orders_per_s=\([0-9.]*\).*/\1/p')"
    P50="$(echo "$LOADGEN" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')"
    P99="$(echo "$LOADGEN" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
    ROWS+=("$(awk -v c="$CLIENT_COUNT" -v o="$ORDERS_S" -v t1="$TPS_1" -v tn="$TPS_N" -v p50="$P50" -v p="$P99" 'BEGIN {
        r1 = o / t1; rn = o / tn
        printf "%7d %10.0f %7.2f %7.2f %10.0f %6.2f %10.0f %6.2f   %s", c, o, p50, p, t1, r1, tn, rn,
            (rn >= 2 && p < 50) ? "MET" : "NOT MET" }')")
    read -r OL OS OP OT OI <<<"$(per_unit_ms "$LOADGEN_CPU" "$ORDERS_S")"
    # pgbench's own process is the client; SERVER_PID is unset while it runs.
    read -r BC _ BP BT BI <<<"$(per_unit_ms "$PGBENCH_CPU" "$TPS_N")"
    CPU_ROWS+=("$(awk -v c="$CLIENT_COUNT" -v os="$OS" -v ol="$OL" -v op="$OP" -v ot="$OT" -v oi="$OI" \
        -v bc="$BC" -v bp="$BP" -v bt="$BT" -v bi="$BI" -v tn="$TPS_N" -v cpus="$CPUS" 'BEGIN {
        printf "%7d %7.3f %7.3f %8.3f %6.3f %5d%% %9.3f %8.3f %6.3f %5d%% %11.3f", c, os, ol, op, ot, oi, bc, bp, bt, bi,
            cpus * 1000 / (2 * tn) }')")
done

echo
echo "orders/s against pgbench TPC-B TPS ($MARKETS market(s), ${SECONDS_RUN} s each)"
echo "target: orders/s >= 2 x pgbench TPS at scale = clients, with p99 < 50 ms"
printf '%7s %10s %7s %7s %10s %6s %10s %6s   %s\n' clients "orders/s" "p50 ms" "p99 ms" "tps s=1" ratio \
    "tps s=cl" ratio target
for row in "${ROWS[@]}"; do
    echo "$row"
done
echo
echo "CPU ms per acknowledged order (ours: capex-server, capex-loadgen, Postgres; the cancels' and"
echo "refusals' CPU included) and per pgbench transaction at scale = clients (pgbench, Postgres), with"
echo "the machine's idle share ($CPUS cores); '2x needs' is the most an order may cost for 2x that"
echo "pgbench TPS with every core busy"
printf '%7s %7s %7s %8s %6s %6s %9s %8s %6s %6s %11s\n' clients server loadgen postgres total idle \
    pgbench postgres total idle "2x needs"
for row in "${CPU_ROWS[@]}"; do
    echo "$row"
done
