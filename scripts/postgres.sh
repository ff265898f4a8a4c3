#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 for the tests.
# Sourced by scripts/test and .ci/run; exports DATABASE_URL.
set -euo pipefail

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || psql -h 127.0.0.1 -U postgres -d postgres -qtAc 'select 1' >/dev/null 2>&1; }

if ! pg_ready; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "postgres: installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if command -v pg_lsclusters >/dev/null 2>&1; then
    cluster=$(pg_lsclusters -h | awk '$3 == 5432 {print $1" "$2; exit}')
    if [ -z "$cluster" ]; then
      version=$(pg_lsclusters -h | awk '{print $1; exit}')
      version=${version:-$(ls /usr/lib/postgresql | sort -n | tail -1)}
      pg_createcluster "$version" main -p 5432 >/dev/null
      cluster="$version main"
    fi
    echo "postgres: starting cluster $cluster"
    # shellcheck disable=SC2086
    # "already running" is fine: it may just be too busy to answer pg_isready yet.
    pg_ctlcluster --skip-systemctl-redirect $cluster start || true
  fi
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
pg_ready || { echo "postgres: nothing answers at 127.0.0.1:5432; set DATABASE_URL or install PostgreSQL" >&2; exit 1; }
# Tests connect as postgres without a password; make sure trust (or peer for root) lets them in.
psql "$DATABASE_URL" -qtAc 'select 1' >/dev/null || {
  echo "postgres: cannot connect with $DATABASE_URL" >&2; exit 1; }
