# Sourced by scripts/api-tests and scripts/fuzz: builds the server, starts it on a fresh database
# and a free port, waits until it is ready, and stops it and drops the database on exit.
# After `start_live_server [serve args...]`: BASE_URL, SERVER_PID, LIVE_DB, SERVER_LOG are set.

source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_pg_admin_url() { echo "$TEST_DATABASE_URL"; }

stop_live_server() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [[ -n "${LIVE_DB:-}" ]]; then
        psql "$(_pg_admin_url)" -qc "drop database if exists \"$LIVE_DB\" with (force)" >/dev/null 2>&1 || true
        LIVE_DB=""
    fi
}

# Usage: start_live_server NAME [serve flags...]; NAME prefixes the database (panels_NAME_<random>).
start_live_server() {
    local name="$1"; shift
    ensure_postgres
    ensure_redis
    echo "building the server" >&2
    cargo build --quiet --locked --bin panels
    local port admin_base
    port="$(_free_port)"
    LIVE_DB="panels_${name}_$(od -An -N5 -tx1 /dev/urandom | tr -d " \n")"
    admin_base="${TEST_DATABASE_URL%/*}"
    SERVER_LOG="target/${name}-server.log"
    trap stop_live_server EXIT
    # A fixed secret so tokens stay valid across restarts of a debugging session; rate limits high
    # enough for a test client that logs in, registers and sends bad credentials many times from
    # one address (the fuzzer's negative cases would otherwise lock it out of every operation).
    # Event streams end after half a second: Bruno and schemathesis read a response to its end.
    env DATABASE_URL="$admin_base/$LIVE_DB" \
        REDIS_URL="${TEST_REDIS_URL:-}" \
        HOST=127.0.0.1 PORT="$port" \
        JWT_SECRET="live-test-secret-0123456789abcdefghijklmnopqrstuvwxyz" \
        ENCRYPTION_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
        LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
        RATE_LIMIT_LOGIN_PER_MINUTE="${RATE_LIMIT_LOGIN_PER_MINUTE:-1000}" \
        RATE_LIMIT_TENANT_RPS="${RATE_LIMIT_TENANT_RPS:-0}" \
        RATE_LIMIT_REGISTER_PER_MINUTE="${RATE_LIMIT_REGISTER_PER_MINUTE:-0}" \
        RATE_LIMIT_AUTH_FAILURES_PER_MINUTE="${RATE_LIMIT_AUTH_FAILURES_PER_MINUTE:-0}" \
        EVENT_STREAM_MAX_MS="${EVENT_STREAM_MAX_MS:-500}" \
        target/debug/panels serve "$@" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    BASE_URL="http://127.0.0.1:$port"
    for _ in $(seq 300); do
        if curl -fsS "$BASE_URL/health/ready" >/dev/null 2>&1; then
            echo "server ready at $BASE_URL (database $LIVE_DB, log $SERVER_LOG)" >&2
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server exited during start-up:" >&2
            tail -20 "$SERVER_LOG" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "the server did not become ready in 60 s" >&2
    tail -20 "$SERVER_LOG" >&2
    return 1
}

# Registers a fresh organisation and prints its admin's access token.
register_tenant_token() {
    local slug="fuzz-$(od -An -N5 -tx1 /dev/urandom | tr -d " \n")"
    curl -fsS -X POST "$BASE_URL/api/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"admin@$slug.example.com\",\"password\":\"correct horse battery staple\",\"tenantSlug\":\"$slug\",\"tenantName\":\"Fuzz $slug\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])'
}
