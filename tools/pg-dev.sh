#!/usr/bin/env bash
# A private PostgreSQL cluster for Strata's tests and benchmarks: Debian's PostgreSQL (15 on
# bookworm), initdb'd in a folder of its own, listening only on a Unix socket (no TCP port to
# collide with), trust authentication for the local user `postgres`. PostgreSQL refuses to
# run as root, so as root the server runs as the `postgres` system user.
#
#   tools/pg-dev.sh start [--fresh]   initdb if needed (--fresh: a new empty cluster), start
#   tools/pg-dev.sh stop | restart | status
#   tools/pg-dev.sh host              the socket folder (for `?host=` and psql -h)
#   tools/pg-dev.sh url DB            a [locator] url for database DB (created if missing)
#   tools/pg-dev.sh createdb DB       creates database DB unless it exists
#
# STRATA_PG_DIR chooses the folder (default: one per checkout under /tmp, since the server's
# user must be able to reach it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${STRATA_PG_DIR:-/tmp/strata-pg-$(printf '%s' "$root" | cksum | cut -d' ' -f1)}"
data="$dir/data"
sock="$dir/run"
log="$dir/server.log"

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "pg-dev: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi

# Runs a PostgreSQL program as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres -d postgres "$@"
}

createdb_if_missing() {
    local db="$1"
    [[ "$db" =~ ^[A-Za-z0-9_]+$ ]] || { echo "pg-dev: bad database name $db" >&2; exit 2; }
    if [ -z "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        psql_admin -c "CREATE DATABASE $db" 2>/dev/null ||
            [ -n "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]
    fi
}

start() {
    if [ "${1:-}" = "--fresh" ]; then
        running && as_owner "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null
        rm -rf "$dir"
    fi
    running && return 0
    mkdir -p "$dir" "$sock"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir" "$sock"
    if [ ! -f "$data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # Enough connections for a parallel test suite of servers with their own pools; fsync
    # stays on: the tests rely on what the locator acknowledged being durable.
    as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$sock' -c max_connections=500 \
            -c shared_buffers=256MB" start >/dev/null ||
        { tail -20 "$log" >&2; exit 1; }
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) running && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true ;;
    restart) as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true; start ;;
    status)
        if running; then echo "running: socket $sock"; else echo "stopped"; exit 3; fi ;;
    host) echo "$sock" ;;
    createdb) createdb_if_missing "${2:?database name}" ;;
    url)
        createdb_if_missing "${2:?database name}"
        echo "postgres://postgres@localhost/$2?host=$sock" ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
