# Sourced by the scripts: makes sure a PostgreSQL and a Redis answer, starting throwaway ones in
# a temporary directory when none does but the binaries are installed. Exports
# TEST_DATABASE_URL and TEST_REDIS_URL for the tests.

PG_URL_DEFAULT="postgres://postgres@127.0.0.1:5432/postgres"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$PG_URL_DEFAULT}"
export TEST_REDIS_URL="${TEST_REDIS_URL-redis://127.0.0.1:6379}"

_pg_answers() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

_redis_answers() {
    local hostport="${1#redis://}"; hostport="${hostport%%/*}"
    redis-cli -h "${hostport%%:*}" -p "${hostport##*:}" ping 2>/dev/null | grep -q PONG
}

ensure_postgres() {
    if _pg_answers "$TEST_DATABASE_URL"; then return 0; fi
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
        echo "PostgreSQL does not answer at $TEST_DATABASE_URL and is not installed" >&2
        return 1
    fi
    local dir port=55432
    dir="$(mktemp -d /tmp/panels-pg.XXXXXX)"
    echo "starting a throwaway PostgreSQL in $dir on port $port" >&2
    local as=()
    if [[ "$(id -u)" == 0 ]]; then chown -R postgres "$dir"; as=(runuser -u postgres --); fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" -l "$dir/log" -w start >/dev/null
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    _pg_answers "$TEST_DATABASE_URL"
}

ensure_redis() {
    if [[ -z "$TEST_REDIS_URL" ]] || _redis_answers "$TEST_REDIS_URL"; then return 0; fi
    if ! command -v redis-server >/dev/null; then
        echo "Redis does not answer at $TEST_REDIS_URL and is not installed: tests run without Redis" >&2
        export TEST_REDIS_URL=""
        return 0
    fi
    local port=56379
    echo "starting a throwaway Redis on port $port" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$(mktemp -d /tmp/panels-redis.XXXXXX)" >/dev/null
    export TEST_REDIS_URL="redis://127.0.0.1:$port"
    for _ in $(seq 50); do _redis_answers "$TEST_REDIS_URL" && return 0; sleep 0.1; done
    return 1
}

# Test databases of earlier (failed or interrupted) runs.
drop_test_databases() {
    psql "$TEST_DATABASE_URL" -Atqc "select datname from pg_database where datname like 'panels_test_%'" 2>/dev/null |
        while read -r db; do psql "$TEST_DATABASE_URL" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true; done
}
