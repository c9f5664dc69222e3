"""The benchmark's knobs (scripts/bench and bench/README.md list them), read once from the
environment when the driver starts, and the driver's log line."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out"


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def seconds(raw: str) -> float:
    """`30s`, `2m`, `500ms` or plain seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", raw)
    if not m:
        sys.exit(f"bench: cannot read the duration {raw!r}")
    value = float(m.group(1))
    return {"ms": value / 1000, "s": value, "m": value * 60, None: value}[m.group(2)]


QUICK = env("BENCH_QUICK", "0") in ("1", "true", "yes")
DURATION = seconds(env("BENCH_DURATION", "3s" if QUICK else "30s"))
WARMUP = seconds(env("BENCH_WARMUP", "1s" if QUICK else "5s"))
CONNECTIONS = int(env("BENCH_CONNECTIONS", "32"))
LOAD_FRACTION = float(env("BENCH_LOAD_FRACTION", "0.75"))
# How many constant-rate runs measure the latency target of GET /api/panels/{id}: on a shared
# virtual machine one run's p99 moves with the host's noise (steal, other services' bursts), so
# the report shows every run with its steal, and the target counts as met only in every run.
LATENCY_RUNS = max(1, int(env("BENCH_LATENCY_RUNS", "3")))
RLS_MODE = env("BENCH_RLS", "both")  # both | on | off
POOL = int(env("DATABASE_MAX_CONNECTIONS", "10"))
# The server's runtime threads (RUNTIME_THREADS; 0 = one per core, the server's default). One: on
# these 2 cores the server shares the machine with PostgreSQL, Redis and oha, and a second
# runtime thread cost more in cross-core wake-ups than it added (bench/README.md, finding 14).
RUNTIME_THREADS = int(env("BENCH_RUNTIME_THREADS", "1"))
PGBENCH_CLIENTS = int(env("BENCH_PGBENCH_CLIENTS", str(POOL)))
PORT = int(env("BENCH_PORT", "3901"))
PG_HOST = env("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = env("BENCH_PG_PORT", "5432")
PG_USER = env("BENCH_PG_USER", "postgres")
DB = env("BENCH_DB", "panels_bench")
PGBENCH_DB = env("BENCH_PGBENCH_DB", "panels_bench_pgbench")
COMPRESSION = env("BENCH_COMPRESSION", "on") == "on"
ONLY = {s for s in env("BENCH_SCENARIOS", "").split(",") if s}
# Production runs with Redis (shared cache versions, rate limits, events): so does the benchmark,
# when one answers. BENCH_REDIS_URL= (empty) runs without it: in-process cache only.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").strip()
OHA = env("OHA", str(ROOT / "target" / "bench-tools" / "bin" / "oha"))
SERVER_BIN = env("BENCH_SERVER_BIN", str(ROOT / "target" / "release" / "panels"))
BASE = f"http://127.0.0.1:{PORT}"

if RLS_MODE not in ("both", "on", "off"):
    sys.exit("bench: BENCH_RLS must be both, on or off")


def selected(key: str) -> bool:
    """Whether BENCH_SCENARIOS asks for this scenario (an empty list asks for all)."""
    return not ONLY or key in ONLY


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
