#!/usr/bin/env python3
"""The load benchmark's driver: starts the release server on the seeded database, measures the
database's own ceiling with pgbench, drives every scenario with oha from separate processes
over loopback, and writes the Markdown report. `scripts/bench` builds, seeds and then runs this;
see bench/README.md for the scenarios and the knobs.

Standard library only. Every figure comes from a tool's own output or from /proc:
  - throughput: oha's requests per second in a closed loop (a fixed number of connections
    sending back to back), which is the most the server answers on this machine;
  - latency: oha at a constant arrival rate (-q) with --latency-correction, so a stalled
    server is charged for the requests it made wait (no coordinated omission);
  - server CPU: utime+stime of the server process (/proc/<pid>/stat) before and after;
  - database CPU: the same for the PostgreSQL backends serving the benchmark's databases;
  - peak RSS: VmHWM of the server (/proc/<pid>/status), reset before each measurement through
    /proc/<pid>/clear_refs.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jwt  # noqa: E402  (bench/jwt.py)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Figures of the Node.js service this one replaces, on a 2-core machine against the same
# PostgreSQL (from the issue).
REFERENCE = {"get_panel": (650, 310.0), "list_panels": (270, None), "create_panel": (440, None)}
REFERENCE_RSS_MB = 470


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def redis_answers(url: str) -> bool:
    """PING over a plain socket (redis://host:port only; the standard library has no client)."""
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


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
# runtime thread cost more in cross-core wake-ups than it added (bench/README.md, finding 16).
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
NO_CACHE = {"CACHE_ENABLED": "false"}
# Scenarios that run on a server started with other settings.
SCENARIO_ENV = {"get_panel_db": NO_CACHE}
OHA = env("OHA", str(ROOT / "target" / "bench-tools" / "bin" / "oha"))
SERVER_BIN = env("BENCH_SERVER_BIN", str(ROOT / "target" / "release" / "panels"))
BASE = f"http://127.0.0.1:{PORT}"

if RLS_MODE not in ("both", "on", "off"):
    sys.exit("bench: BENCH_RLS must be both, on or off")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def db_url(db: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def psql(sql: str, db: str = DB) -> str:
    out = subprocess.run(
        ["psql", db_url(db), "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def rls_tables() -> list[str]:
    """The tables the migrations put under row-level security (enabled and forced)."""
    # By their policies, so a run interrupted with RLS off still finds every table to restore.
    names = psql("select distinct tablename from pg_policies where schemaname = 'public' order by 1")
    return [n for n in names.splitlines() if n]


def set_rls(tables: list[str], on: bool) -> None:
    """Turns row-level security on or off for the benchmark database's tables only: a table
    setting, so nothing cluster-wide (roles) changes and other databases are untouched."""
    if not tables:
        return
    if on:
        stmts = [f'alter table "{t}" enable row level security; alter table "{t}" force row level security;' for t in tables]
    else:
        stmts = [f'alter table "{t}" no force row level security; alter table "{t}" disable row level security;' for t in tables]
    psql("begin; " + " ".join(stmts) + " commit;")


# ---------------------------------------------------------------------------------------------
# /proc


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # Peak RSS then covers the process's whole life; still an upper bound.


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine, from /proc/stat. Steal is the time
    the hypervisor ran something else while this machine's vCPUs wanted to run."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK, parts[7] / CLK_TCK


def backends(dbs: tuple[str, ...]) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to `dbs` (by their process titles)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: "):
                continue
            # "postgres: [15/main: ]<user> <database> <host(port)> <state>"
            words = title.split()[1:]
            if words and words[0].endswith(":"):
                words = words[1:]
            if len(words) >= 2 and words[1] in dbs:
                found[int(entry.name)] = proc_cpu(int(entry.name))
        except OSError:
            continue
    return found


class BackendSampler:
    """Samples the backends' CPU every 200 ms, so backends that exit during a run (pgbench's)
    are still counted up to their last sample."""

    def __init__(self, dbs: tuple[str, ...]):
        self.dbs = dbs
        self.base = backends(dbs)
        self.last = dict(self.base)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            self.last.update(backends(self.dbs))

    def finish(self) -> float:
        self.stop.set()
        self.thread.join()
        self.last.update(backends(self.dbs))
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


@dataclass
class Usage:
    """What the machine spent during one measured run."""

    server_cpu: float = 0.0
    db_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    machine_busy: float = 0.0
    machine_total: float = 0.0
    steal: float = 0.0
    peak_rss_mb: float = float("nan")
    wall: float = 0.0

    @property
    def other_cpu(self) -> float:
        """CPU seconds spent by everything else on the machine (other engineers' builds, other
        services), steal excluded."""
        return max(0.0, self.machine_busy - self.steal - self.server_cpu - self.db_cpu - self.loadgen_cpu)

    @property
    def steal_pct(self) -> float:
        """The share of the machine's CPU time the hypervisor took away during the run."""
        return 100 * self.steal / self.machine_total if self.machine_total else float("nan")


class Meter:
    def __init__(self, server_pid: int | None, dbs: tuple[str, ...]):
        self.pid = server_pid
        self.dbs = dbs

    def __enter__(self) -> "Meter":
        if self.pid:
            reset_peak_rss(self.pid)
            self.cpu0 = proc_cpu(self.pid)
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine0 = machine_cpu()
        self.sampler = BackendSampler(self.dbs)
        self.t0 = time.monotonic()
        self.usage = Usage()
        return self

    def __exit__(self, *exc) -> None:
        u = self.usage
        u.wall = time.monotonic() - self.t0
        u.db_cpu = self.sampler.finish()
        busy1, total1, steal1 = machine_cpu()
        u.machine_busy = busy1 - self.machine0[0]
        u.machine_total = total1 - self.machine0[1]
        u.steal = steal1 - self.machine0[2]
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        u.loadgen_cpu = (c1.ru_utime - self.children0.ru_utime) + (c1.ru_stime - self.children0.ru_stime)
        if self.pid:
            u.server_cpu = proc_cpu(self.pid) - self.cpu0
            u.peak_rss_mb = peak_rss_mb(self.pid)


# ---------------------------------------------------------------------------------------------
# The server


class ServerDied(RuntimeError):
    pass


class Server:
    def __init__(self, env_vars: dict[str, str], log_path: Path):
        self.env = env_vars
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, extra: dict[str, str] | None = None) -> None:
        logf = open(self.log_path, "ab")
        # Its own session: a signal meant for the driver's terminal or process group is not its.
        self.proc = subprocess.Popen(
            [SERVER_BIN, "serve"], env={**self.env, **(extra or {})}, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bench: the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{BASE}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        sys.exit("bench: the server did not answer /health within 60 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise ServerDied(f"the server exited (status {code}) during the run")


    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def http(method: str, path: str, token: str | None = None, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            status, hdrs = r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


# ---------------------------------------------------------------------------------------------
# Load generation


@dataclass
class Load:
    """One oha invocation's target: a method, one or more URLs, headers and a body."""

    method: str
    urls: list[str]
    headers: list[str] = field(default_factory=list)
    body: str | None = None
    expect: tuple[int, ...] = (200,)


@dataclass
class Outcome:
    requests: int = 0
    rps: float = 0.0
    p50: float = float("nan")
    p95: float = float("nan")
    p99: float = float("nan")
    p999: float = float("nan")
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    offered: float | None = None
    usage: Usage = field(default_factory=Usage)

    def cpu_per_1k(self) -> float:
        return self.usage.server_cpu / self.requests * 1000 if self.requests else float("nan")

    def db_cpu_per_1k(self) -> float:
        return self.usage.db_cpu / self.requests * 1000 if self.requests else float("nan")


def oha_args(load: Load, tmp: Path, duration: float, connections: int, rate: float | None,
             db: Path | None = None, threads: int | None = None) -> list[str]:
    args = [OHA, "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(connections),
            "-w", "-m", load.method]
    if not COMPRESSION:
        args.append("--disable-compression")
    for h in load.headers:
        args += ["-H", h]
    if load.body is not None:
        args += ["-d", load.body, "-T", "application/json"]
    if rate is not None:
        args += ["-q", f"{rate:.2f}", "--latency-correction"]
    if db is not None:
        args += ["--db-url", str(db)]
    if threads is not None:
        args += ["--worker-threads", str(threads)]
    if len(load.urls) == 1:
        args.append(load.urls[0])
    else:
        path = tmp / f"urls-{secrets.token_hex(4)}.txt"
        path.write_text("\n".join(load.urls) + "\n")
        args += ["--urls-from-file", str(path)]
    return args


def parse_oha(raw: str, load: Load) -> Outcome:
    data = json.loads(raw)
    pct = data.get("latencyPercentiles", {})
    statuses = {k: int(v) for k, v in data.get("statusCodeDistribution", {}).items()}
    error_kinds = {k: int(v) for k, v in data.get("errorDistribution", {}).items()}
    expected = {str(s) for s in load.expect}
    unexpected = sum(v for k, v in statuses.items() if k not in expected)
    total = sum(statuses.values())
    ms = lambda key: (pct.get(key) or float("nan")) * 1000  # noqa: E731
    return Outcome(
        requests=total,
        rps=data["summary"]["requestsPerSec"],
        p50=ms("p50"), p95=ms("p95"), p99=ms("p99"), p999=ms("p99.9"),
        errors=unexpected + sum(error_kinds.values()),
        statuses=statuses, error_kinds=error_kinds,
    )


def run_oha(args: list[str]) -> str:
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr.strip()[:500]}")
    return out.stdout


def drive(load: Load, server: "Server", tmp: Path, connections: int, rate: float | None,
          warmup: bool, duration: float | None = None) -> Outcome:
    if warmup and WARMUP > 0:
        run_oha(oha_args(load, tmp, WARMUP, connections, rate))
    server.check_alive()
    with Meter(server.pid, (DB,)) as m:
        raw = run_oha(oha_args(load, tmp, duration or DURATION, connections, rate))
    # A server that stopped mid-run (another process's signal) invalidates the figures.
    server.check_alive()
    outcome = parse_oha(raw, load)
    outcome.offered = rate
    outcome.usage = m.usage
    return outcome


# ---------------------------------------------------------------------------------------------
# pgbench


# What GET /api/panels/{id} sends on a cache miss: one statement, whose function binds the tenant
# for the statement's own transaction (migration 0900, src/panels/repo.rs).
PANEL_SQL = "select * from read_panel('{t}', :id, '{email}', '{sub}');\n"


# What POST /api/panels without an Idempotency-Key sends: one statement inserting the panel and
# its owner entry, committed by itself.
CREATE_SQL = (
    "select * from create_panels('{t}', '[{{\"userId\": \"{sub}\", \"owner\": \"{email}\", "
    "\"name\": \"Bench panel\", \"description\": \"Created by the load benchmark\", "
    "\"cohortRule\": {{\"conditions\": [], \"logic\": \"AND\"}}, \"metadata\": {{\"source\": \"bench\"}}}}]');\n"
)


ABBA = (False, True, True, False)


def merge(outcomes: list[Outcome]) -> Outcome:
    """Two runs of equal length as one: requests and CPU add up, rates average."""
    u = Usage()
    for o in outcomes:
        for k in ("server_cpu", "db_cpu", "loadgen_cpu", "machine_busy", "machine_total", "steal", "wall"):
            setattr(u, k, getattr(u, k) + getattr(o.usage, k))
    return Outcome(requests=sum(o.requests for o in outcomes), rps=sum(o.rps for o in outcomes) / len(outcomes),
                   errors=sum(o.errors for o in outcomes), usage=u)


def pgbench(db: str, tmp: Path, extra: list[str], pg_env: dict[str, str] | None = None,
            duration: float | None = None) -> Outcome:
    """A closed-loop pgbench run with as many clients as the server's pool has connections.
    Latency percentiles come from a 5% sample of the per-transaction log."""
    logdir = Path(tempfile.mkdtemp(dir=tmp))
    base = ["pgbench", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-n", "-M", "prepared",
            "-c", str(PGBENCH_CLIENTS), "-j", "2"] + extra
    run_env = dict(os.environ, **(pg_env or {}))
    if WARMUP > 0:
        subprocess.run(base + ["-T", str(max(1, round(WARMUP))), db], check=True, capture_output=True, env=run_env)
    with Meter(None, (db,)) as m:
        out = subprocess.run(
            base + ["-T", str(max(1, round(duration or DURATION))), "-l", "--sampling-rate", "0.05",
                    f"--log-prefix={logdir}/tx", db],
            check=True, capture_output=True, text=True, env=run_env,
        )
    tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout).group(1))
    count = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    lat = []
    for f in logdir.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1000)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    shutil.rmtree(logdir, ignore_errors=True)
    return Outcome(requests=count, rps=tps, p50=q(0.5), p95=q(0.95), p99=q(0.99), p999=q(0.999),
                   errors=int(failed.group(1)) if failed else 0, usage=m.usage)


# ---------------------------------------------------------------------------------------------
# The scenarios


@dataclass
class Tenant:
    k: int
    token: str

    @property
    def slug(self) -> str:
        return f"t{self.k:03d}"

    @property
    def email(self) -> str:
        return f"builder@{self.slug}.example"

    @property
    def sub(self) -> str:
        return f"builder-{self.k}"

    @property
    def auth(self) -> str:
        return f"Authorization: Bearer {self.token}"

    def panel_ids(self) -> list[int]:
        return [(self.k - 1) * 20 + p for p in range(1, 21)]

    def view_ids(self) -> list[int]:
        return [(pid - 1) * 5 + v for pid in self.panel_ids() for v in range(1, 6)]


CREATE_BODY = json.dumps({
    "name": "Bench panel",
    "description": "Created by the load benchmark",
    "metadata": {"source": "bench", "color": "blue"},
    "cohortRule": {"conditions": [], "logic": "AND"},
})
UPDATE_BODY = json.dumps({
    "name": "Renamed by the benchmark",
    "description": "Updated under load",
    "metadata": {"reviewed": True},
})


@dataclass
class Result:
    key: str
    title: str
    capacity: Outcome | None = None
    # Every constant-rate run (several for a latency target, one otherwise).
    at_rate_runs: list[Outcome] = field(default_factory=list)
    # GET /health at the same rate right after each of those runs, on the same server: the tail the
    # machine itself adds to any answer at that load (no authentication, cache, Redis or database).
    control_runs: list[Outcome] = field(default_factory=list)
    note: str = ""
    available: bool = True

    @property
    def at_rate(self) -> Outcome | None:
        """The constant-rate run the tables show: the one with the median p99."""
        runs = sorted(self.at_rate_runs, key=lambda o: o.p99)
        return runs[len(runs) // 2] if runs else None


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.2f}"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="panels-bench-"))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    secret = secrets.token_urlsafe(48)
    server_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "production",
        "LOG_FORMAT": "json",
        "HOST": "127.0.0.1",
        "PORT": str(PORT),
        "DATABASE_URL": db_url(DB),
        "DATABASE_MAX_CONNECTIONS": str(POOL),
        "JWT_SECRET": secret,
        "ENCRYPTION_KEY": secrets.token_hex(32),
        # The limits stay in the request path but far above what one machine can send.
        "RATE_LIMIT_TENANT_RPS": "1000000",
        "RATE_LIMIT_TENANT_BURST": "10000000",
        "RATE_LIMIT_LOGIN_PER_MINUTE": "100000",
    }
    redis_note = "none (BENCH_REDIS_URL is empty): in-process cache only"
    if REDIS_URL and redis_answers(REDIS_URL):
        server_env["REDIS_URL"] = REDIS_URL
        redis_note = f"{REDIS_URL} (cache versions, rate limits and events, as in production)"
    elif REDIS_URL:
        redis_note = f"none: {REDIS_URL} did not answer PING, so the server ran with its in-process cache only"
    server_env["RUNTIME_THREADS"] = str(RUNTIME_THREADS)
    for passthrough in ("RUST_LOG", "WORKER_CONCURRENCY"):
        if os.environ.get(passthrough):
            server_env[passthrough] = os.environ[passthrough]
    # The allocator's own settings (MIMALLOC_PURGE_DELAY, …), for experiments.
    server_env.update({k: v for k, v in os.environ.items() if k.startswith("MIMALLOC_")})
    server = Server(server_env, OUT / f"{stamp}-server.log")
    tables = rls_tables()
    results: dict[str, Result] = {}
    rls_pairs: dict[str, tuple[str, Outcome, Outcome]] = {}
    notes: list[str] = []
    load_info = {"start": os.getloadavg(), "redis": redis_note}

    def selected(key: str) -> bool:
        return not ONLY or key in ONLY

    def tenant(k: int) -> Tenant:
        t = f"t{k:03d}"
        return Tenant(k, jwt.sign(secret, t, f"builder@{t}.example", "builder", f"builder-{k}"))

    try:
        # ---- the database's own ceiling ---------------------------------------------------
        log(f"pgbench -S -M prepared, {PGBENCH_CLIENTS} clients, {DURATION:g} s")
        pg_ceiling = pgbench(PGBENCH_DB, tmp, ["-S"])
        log(f"  {pg_ceiling.rps:,.0f} tps, p99 {pg_ceiling.p99:.2f} ms")
        reads = tenant(3)
        floor_script = tmp / "get_panel.sql"
        floor_script.write_text(
            f"\\set id random({reads.panel_ids()[0]}, {reads.panel_ids()[-1]})\n"
            + PANEL_SQL.format(t=reads.slug, email=reads.email, sub=reads.sub)
        )
        # As the runtime role, like the server's pool, so row-level security applies.
        role_env = {"PGOPTIONS": "-c role=panels_app"}
        rls_initial_on = RLS_MODE != "off"
        set_rls(tables, rls_initial_on)
        log("pgbench: the SQL of GET /api/panels/{id} on a cache miss (read_panel: one statement)")
        sql_floor = pgbench(DB, tmp, ["-f", str(floor_script)], role_env)
        log(f"  {sql_floor.rps:,.0f} tps, p99 {sql_floor.p99:.2f} ms")
        floor_tenant = tenant(60)
        create_script = tmp / "create_panel.sql"
        create_script.write_text(
            CREATE_SQL.format(t=floor_tenant.slug, email=floor_tenant.email, sub=floor_tenant.sub)
        )
        log("pgbench: the SQL of POST /api/panels (create_panels with one panel: one statement)")
        create_floor = pgbench(DB, tmp, ["-f", str(create_script)], role_env)
        log(f"  {create_floor.rps:,.0f} tps, p99 {create_floor.p99:.2f} ms")

        server.start()
        idle_rss = rss_mb(server.pid)
        log(f"server pid {server.pid} on {BASE} (RLS {'on' if rls_initial_on else 'off'}), {idle_rss:.1f} MB resident")

        # ---- fixtures the scenarios need ---------------------------------------------------
        writes = tenant(4)
        creates = tenant(50)
        big = tenant(1)
        password = "bench-password-123"
        status, _, body = http("POST", "/api/auth/register", body={
            "email": "login@bench.example", "password": password, "name": "Login Bench",
            "tenantSlug": "bench-login", "tenantName": "Login bench"})
        if status not in (201, 409):
            notes.append(f"Registering the login user answered {status}: {body}")

        rows_path = f"/api/panels/{big.panel_ids()[0]}/rows?limit=50"
        rows_status, _, rows_body = http("GET", rows_path, big.token)
        rows_available = rows_status == 200
        if not rows_available:
            code = rows_body.get("code") if isinstance(rows_body, dict) else rows_body
            notes.append(f"GET /api/panels/{{id}}/rows answered {rows_status} ({code}) on this build: "
                         "reported as not available.")

        # If-Match: a fresh ETag succeeds and a stale one answers 412 (checked once, by hand).
        pid = writes.panel_ids()[0]
        s1, h1, _ = http("GET", f"/api/panels/{pid}", writes.token)
        etag = h1.get("etag", "")
        s2, h2, _ = http("PUT", f"/api/panels/{pid}", writes.token, json.loads(UPDATE_BODY), {"If-Match": etag})
        s3, _, _ = http("PUT", f"/api/panels/{pid}", writes.token, json.loads(UPDATE_BODY), {"If-Match": etag})
        notes.append(f"If-Match check before the PUT scenarios: GET → {s1} with ETag {etag}; PUT with it → {s2} "
                     f"(new ETag {h2.get('etag', '?')}); PUT again with the now stale tag → {s3}.")

        def panel_urls(t: Tenant) -> list[str]:
            return [f"{BASE}/api/panels/{p}" for p in t.panel_ids()]

        loads: dict[str, tuple[str, Load, int]] = {
            "health": ("GET /health", Load("GET", [f"{BASE}/health"]), CONNECTIONS),
            "get_panel": ("GET /api/panels/{id}", Load("GET", panel_urls(reads), [reads.auth]), CONNECTIONS),
            "get_panel_db": ("GET /api/panels/{id}, cache off (every read from PostgreSQL)",
                             Load("GET", panel_urls(reads), [reads.auth]), CONNECTIONS),
            "list_panels": ("GET /api/panels", Load("GET", [f"{BASE}/api/panels"], [reads.auth]), CONNECTIONS),
            "get_view": ("GET /api/views/{id}", Load("GET", [f"{BASE}/api/views/{v}" for v in reads.view_ids()], [reads.auth]), CONNECTIONS),
            "rows": ("GET /api/panels/{id}/rows?limit=50",
                     Load("GET", [f"{BASE}/api/panels/{p}/rows?limit=50" for p in big.panel_ids()], [big.auth]), CONNECTIONS),
            "update_panel": ("PUT /api/panels/{id} (If-Match: *)",
                             Load("PUT", panel_urls(writes), [writes.auth, "If-Match: *"], UPDATE_BODY), CONNECTIONS),
            "update_stale": ("PUT /api/panels/{id} (stale If-Match → 412)",
                             Load("PUT", [f"{BASE}/api/panels/{pid}"], [writes.auth, f'If-Match: "panel-{pid}-v0"'],
                                  UPDATE_BODY, expect=(412,)), CONNECTIONS),
            "create_panel": ("POST /api/panels", Load("POST", [f"{BASE}/api/panels"], [creates.auth], CREATE_BODY, (201,)), CONNECTIONS),
        }
        # Last: argon2's 19 MiB blocks stay resident after a burst of logins (see the README).
        login_load = ("POST /api/auth/login (argon2)",
                      Load("POST", [f"{BASE}/api/auth/login"], [],
                           json.dumps({"email": "login@bench.example", "password": password})), 4)
        # RLS is measured on the database path (cache off): a cache hit reads no table at all.
        read_keys = ["get_panel", "list_panels", "get_view", "rows"]

        # ---- single-endpoint scenarios -----------------------------------------------------
        # Each on a freshly started server, so its peak RSS is its own (memory the allocator
        # keeps after one scenario would otherwise show up as the next one's peak).
        def scenario(key: str, title: str, load: Load, conns: int) -> None:
            for attempt in (1, 2):
                try:
                    return scenario_once(key, title, load, conns)
                except ServerDied as died:
                    notes.append(f"{title}: {died} (attempt {attempt}; see the server log){'; run again' if attempt == 1 else ''}.")
                    log(f"  {died}")
                    if attempt == 2:
                        results[key].available = False

        def scenario_once(key: str, title: str, load: Load, conns: int) -> None:
            res = Result(key, title)
            results[key] = res
            if key == "rows" and not rows_available:
                res.available = False
                return
            server.stop()
            server.start(SCENARIO_ENV.get(key))
            log(f"{title}: capacity ({conns} connections, closed loop)")
            res.capacity = drive(load, server, tmp, conns, None, warmup=True)
            cap = res.capacity.rps
            rate = LOAD_FRACTION * cap
            if key in ("get_panel", "get_panel_db"):
                target = 0.5 * pg_ceiling.rps
                if cap >= target:
                    rate = target
                    res.note = "latency measured at half the pgbench -S ceiling (the target load)"
                else:
                    res.note = (f"capacity below half the pgbench ceiling ({target:,.0f}/s): latency measured "
                                f"at {LOAD_FRACTION:.0%} of capacity")
            if key == "update_stale":
                log(f"  {cap:,.0f}/s, errors {res.capacity.errors}")
                return
            log(f"  {cap:,.0f}/s, errors {res.capacity.errors}; constant rate {rate:,.0f}/s")
            target = key in ("get_panel", "get_panel_db")
            for _ in range(LATENCY_RUNS if target else 1):
                run = drive(load, server, tmp, max(conns, 8), rate, warmup=False)
                res.at_rate_runs.append(run)
                log(f"  p50 {run.p50:.2f} ms, p99 {run.p99:.2f} ms, errors {run.errors}, steal {run.usage.steal_pct:.1f}%")
                if target:
                    control = drive(loads["health"][1], server, tmp, max(conns, 8), rate, warmup=False)
                    res.control_runs.append(control)
                    log(f"  control GET /health at the same rate: p99 {control.p99:.2f} ms, "
                        f"steal {control.usage.steal_pct:.1f}%")

        for key, (title, load, conns) in loads.items():
            if selected(key):
                scenario(key, title, load, conns)

        # ---- the mix -------------------------------------------------------------------------
        mix = None
        for attempt in (1, 2) if selected("mix") else ():
            server.stop()
            server.start()
            try:
                mix = run_mix(server, tmp, tenant, results, rows_available)
                server.check_alive()
                break
            except ServerDied as died:
                mix = None
                notes.append(f"Mix: {died} (attempt {attempt}).")
        if mix:
            log(f"mix: {mix['achieved']:,.0f}/s of {mix['offered']:,.0f}/s offered, p99 {mix['all'].p99:.2f} ms, "
                f"peak RSS {mix['usage'].peak_rss_mb:.1f} MB")

        if selected("login"):
            scenario("login", *login_load)

        # ---- RLS off --------------------------------------------------------------------------
        # Without, with, with, without (half the duration each, back to back): a load the rest of
        # the machine puts on the cores that drifts during the four runs weighs on both sides alike.
        if RLS_MODE == "both":
            log("row-level security off/on pairs for the read scenarios (table setting of the bench database only)")
            server.stop()
            try:
                half = DURATION / 2
                runs = {False: [], True: []}
                for enabled in ABBA:
                    set_rls(tables, enabled)
                    runs[enabled].append(pgbench(DB, tmp, ["-f", str(floor_script)], role_env, duration=half))
                on, off = merge(runs[True]), merge(runs[False])
                rls_pairs["sql_floor"] = ("SQL of GET /api/panels/{id} (pgbench)", on, off)
                log(f"  sql floor: {off.rps:,.0f}/s without RLS, {on.rps:,.0f}/s with")
                for key in read_keys:
                    if key in results and results[key].capacity is not None:
                        title, load, conns = loads[key]
                        runs = {False: [], True: []}
                        try:
                            for enabled in ABBA:
                                server.stop()
                                set_rls(tables, enabled)
                                server.start(NO_CACHE)
                                runs[enabled].append(drive(load, server, tmp, conns, None, warmup=True, duration=half))
                        except ServerDied as died:
                            notes.append(f"RLS comparison of {title}: {died}; left out.")
                            continue
                        pair = {True: merge(runs[True]), False: merge(runs[False])}
                        rls_pairs[key] = (title, pair[True], pair[False])
                        log(f"  {key}: {pair[False].rps:,.0f}/s without RLS, {pair[True].rps:,.0f}/s with")
            finally:
                server.stop()
                set_rls(tables, True)
    finally:
        server.stop()
        if tables:
            set_rls(tables, True)
        shutil.rmtree(tmp, ignore_errors=True)

    load_info["end"] = os.getloadavg()
    notes.append(f"The server holds {idle_rss:.1f} MB resident right after start.")
    report = render(stamp, pg_ceiling, sql_floor, create_floor, results, mix, rls_pairs, notes, load_info)
    path = OUT / f"{stamp}.md"
    path.write_text(report)
    (OUT / "latest.md").write_text(report)
    (OUT / f"{stamp}.json").write_text(json.dumps(as_json(pg_ceiling, sql_floor, create_floor, results, mix, rls_pairs), indent=2))
    print(report)
    log(f"report: {path} (and bench/out/latest.md)")
    return 0


# ---------------------------------------------------------------------------------------------
# The mix: several oha processes at proportional constant rates, one per (class, tenant), whose
# per-request records (sqlite, --db-url) are merged for exact percentiles.

MIX_TENANTS = [(1, 0.4), (2, 0.3), (10, 0.2), (30, 0.1)]
MIX_SHARES = {"read": 0.80, "create": 0.15, "update": 0.05}


def run_mix(server: Server, tmp: Path, tenant, results: dict[str, Result], rows_available: bool) -> dict:
    # The read share itself: 40% one panel, 20% the list, 20% a view, 20% rows (views take the
    # rows' share when that endpoint is missing).
    read_parts = {"get_panel": 0.4, "list_panels": 0.2, "get_view": 0.2, "rows": 0.2}
    if not rows_available:
        read_parts = {"get_panel": 0.4, "list_panels": 0.2, "get_view": 0.4}

    # The capacity of the mix: first offered at 1.5 times what the single scenarios predict for
    # it (time per request weighted by share), so that what gets answered is the most this
    # machine does; then measured at LOAD_FRACTION of that, like the single scenarios.
    def cap(key: str, fallback: float) -> float:
        r = results.get(key)
        return r.capacity.rps if r and r.capacity and r.capacity.rps > 0 else fallback

    cost = sum(MIX_SHARES["read"] * share / cap(k, 1000) for k, share in read_parts.items())
    cost += MIX_SHARES["create"] / cap("create_panel", 500) + MIX_SHARES["update"] / cap("update_panel", 500)
    predicted = 1 / cost

    def plan(offered: float) -> list:
        procs = []
        for k, weight in MIX_TENANTS:
            t = tenant(k)
            pids = t.panel_ids()
            read_urls = []
            for p in pids:
                read_urls += [f"{BASE}/api/panels/{p}"] * round(read_parts["get_panel"] * 10)
                read_urls += [f"{BASE}/api/panels"] * round(read_parts["list_panels"] * 10)
                read_urls += [f"{BASE}/api/views/{(p - 1) * 5 + 1 + (p % 5)}"] * round(read_parts["get_view"] * 10)
                if "rows" in read_parts:
                    read_urls += [f"{BASE}/api/panels/{p}/rows?limit=50"] * round(read_parts["rows"] * 10)
            classes = {
                "read": Load("GET", read_urls, [t.auth]),
                "create": Load("POST", [f"{BASE}/api/panels"], [t.auth], CREATE_BODY, (201,)),
                "update": Load("PUT", [f"{BASE}/api/panels/{p}" for p in pids], [t.auth, "If-Match: *"], UPDATE_BODY),
            }
            for cls, load in classes.items():
                rate = offered * MIX_SHARES[cls] * weight
                conns = int(min(CONNECTIONS, max(2, math.ceil(rate / 50))))
                procs.append((cls, t.slug, load, rate, conns))
        return procs

    def launch(procs: list, duration: float, with_db: bool) -> list[tuple[str, Load, subprocess.Popen, Path | None]]:
        running = []
        for cls, slug, load, rate, conns in procs:
            db = tmp / f"mix-{cls}-{slug}-{secrets.token_hex(3)}.db" if with_db else None
            args = oha_args(load, tmp, duration, conns, rate, db=db, threads=1)
            running.append((cls, load, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), db))
        return running

    def collect(running) -> list[tuple[str, Load, str, Path | None]]:
        done = []
        for cls, load, proc, db in running:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"oha (mix {cls}) failed: {err.strip()[:500]}")
            done.append((cls, load, out, db))
        return done

    if os.environ.get("BENCH_MIX_RATE"):
        capacity = None
        offered = float(os.environ["BENCH_MIX_RATE"])
    else:
        overload = plan(1.5 * predicted)
        log(f"mix 80/15/5 across {len(MIX_TENANTS)} tenants: capacity, {1.5 * predicted:,.0f}/s offered "
            f"by {len(overload)} oha processes")
        if WARMUP > 0:
            collect(launch(overload, WARMUP, False))
        done = collect(launch(overload, DURATION, False))
        capacity = sum(parse_oha(raw, load).requests for _, load, raw, _ in done) / DURATION
        offered = LOAD_FRACTION * capacity
        log(f"  answered {capacity:,.0f}/s; constant rate {offered:,.0f}/s")
    procs = plan(offered)
    with Meter(server.pid, (DB,)) as m:
        finished = collect(launch(procs, DURATION, True))

    per_class: dict[str, list[float]] = {c: [] for c in MIX_SHARES}
    out = {"offered": offered, "capacity": capacity, "predicted": predicted, "usage": m.usage, "classes": {},
           "errors": 0, "statuses": {}}
    total = 0
    for cls, load, raw, db in finished:
        o = parse_oha(raw, load)
        out["errors"] += o.errors
        total += o.requests
        for s, n in o.statuses.items():
            out["statuses"][s] = out["statuses"].get(s, 0) + n
        if db and db.exists():
            with sqlite3.connect(db) as conn:
                per_class[cls] += [
                    (end - (corr if corr is not None else start)) * 1000
                    for start, corr, end in conn.execute("select start, start_latency_correction, end from oha")
                ]
    out["achieved"] = total / DURATION
    out["requests"] = total

    def summary(lat: list[float]) -> Outcome:
        lat = sorted(lat)
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
        return Outcome(requests=len(lat), rps=len(lat) / DURATION, p50=q(0.5), p95=q(0.95), p99=q(0.99), p999=q(0.999))

    for cls, lat in per_class.items():
        out["classes"][cls] = summary(lat)
    out["all"] = summary([x for lat in per_class.values() for x in lat])
    out["all"].errors = out["errors"]
    out["all"].usage = m.usage
    out["all"].requests = total
    return out


# ---------------------------------------------------------------------------------------------
# The report


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}"


def render(stamp, pg, floor, create_floor, results, mix, rls_pairs, notes, load_info) -> str:
    health = results.get("health")
    health_rps = health.capacity.rps if health and health.capacity else None
    pg_version = psql("show server_version")
    lines = [
        f"# Panels load benchmark — {stamp}",
        "",
        f"- Machine: {machine_line()}; load average {load_info['start'][0]:.1f} at the start, "
        f"{load_info['end'][0]:.1f} at the end. **The cores are shared with other engineers' builds**: "
        "the \"other CPU\" column shows what the rest of the machine burned during each measurement, and the "
        "\"steal\" column what the hypervisor took from this virtual machine's cores.",
        f"- PostgreSQL {pg_version} on the same machine; server pool {POOL} connections, {RUNTIME_THREADS or 'one per core'} runtime thread{'s' if RUNTIME_THREADS != 1 else ''}; pgbench {PGBENCH_CLIENTS} clients, 2 threads.",
        f"- Each run {DURATION:g} s after a {WARMUP:g} s warm-up; closed loop with {CONNECTIONS} connections for "
        f"throughput, then a constant rate (oha -q, --latency-correction) at {LOAD_FRACTION:.0%} of it for latency "
        f"(GET /api/panels/{{id}}: at half the pgbench ceiling). Compression {'on (oha sends Accept-Encoding: gzip, br …, like a browser)' if COMPRESSION else 'off'}.",
        f"- Load generator (oha) and PostgreSQL run on the same 2 cores as the server. Row-level security: {RLS_MODE}.",
        f"- Redis: {load_info['redis']}. Reads go through the cache (a hit still reads the entry's versions from "
        "Redis); the scenario marked *cache off* and the row-level security pairs run with `CACHE_ENABLED=false`, "
        "so every read reaches PostgreSQL.",
        "",
        "## Ceilings",
        "",
        "| Reference | req/s | p50 ms | p99 ms | p99.9 ms | DB CPU s / 1k |",
        "|---|---:|---:|---:|---:|---:|",
        f"| pgbench -S -M prepared (one-row indexed read) | {fmt(pg.rps, 0)} | {fmt(pg.p50, 2)} | {fmt(pg.p99, 2)} | {fmt(pg.p999, 2)} | {fmt(pg.db_cpu_per_1k(), 3)} |",
        f"| pgbench: the SQL of GET /api/panels/{{id}} on a cache miss (`read_panel`, one statement, as panels_app) | {fmt(floor.rps, 0)} | {fmt(floor.p50, 2)} | {fmt(floor.p99, 2)} | {fmt(floor.p999, 2)} | {fmt(floor.db_cpu_per_1k(), 3)} |",
        f"| pgbench: the SQL of POST /api/panels (`create_panels` with one panel, one statement, as panels_app) | {fmt(create_floor.rps, 0)} | {fmt(create_floor.p50, 2)} | {fmt(create_floor.p99, 2)} | {fmt(create_floor.p999, 2)} | {fmt(create_floor.db_cpu_per_1k(), 3)} |",
        f"| GET /health (the HTTP ceiling) | {fmt(health_rps, 0)} | | | | |",
        "",
        "## Scenarios",
        "",
        "Throughput is the closed-loop maximum; latencies are at the constant rate shown (coordinated omission corrected). "
        "CPU columns are seconds per 1,000 requests of the closed-loop run; peak RSS is the server's VmHWM over both runs; "
        "steal is the share of the machine's CPU time the hypervisor took during the constant-rate run (where a latency "
        "target has several runs, the row shows the one with the median p99).",
        "",
        "| Scenario | max req/s | ÷ pgbench -S | ÷ /health | at req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | errors | server CPU s/1k | DB CPU s/1k | peak RSS MB | other CPU s | steal % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        if not r.available:
            lines.append(f"| {r.title} | not available | | | | | | | | | | | | | |")
            continue
        c, a = r.capacity, r.at_rate
        lat = a or c
        rss = max(c.usage.peak_rss_mb, a.usage.peak_rss_mb if a else 0)
        errors = c.errors + (a.errors if a else 0)
        lines.append(
            f"| {r.title} | {fmt(c.rps, 0)} | {ratio(c.rps, pg.rps)} | {ratio(c.rps, health_rps)} | "
            f"{fmt(a.offered, 0) if a else 'closed loop'} | {fmt(lat.p50, 2)} | {fmt(lat.p95, 2)} | {fmt(lat.p99, 2)} | "
            f"{fmt(lat.p999, 2)} | {errors} | {fmt(c.cpu_per_1k(), 3)} | {fmt(c.db_cpu_per_1k(), 3)} | {fmt(rss)} | "
            f"{fmt(c.usage.other_cpu)} | {fmt(lat.usage.steal_pct)} |"
        )
    if mix:
        a = mix["all"]
        lines.append(
            f"| Mix 80% reads / 15% creates / 5% updates, 4 tenants | {fmt(mix['capacity'] or mix['achieved'], 0)} | "
            f"{ratio(mix['capacity'] or mix['achieved'], pg.rps)} | {ratio(mix['capacity'] or mix['achieved'], health_rps)} | "
            f"{fmt(mix['offered'], 0)} (answered {fmt(mix['achieved'], 0)}) | "
            f"{fmt(a.p50, 2)} | {fmt(a.p95, 2)} | {fmt(a.p99, 2)} | {fmt(a.p999, 2)} | {mix['errors']} | "
            f"{fmt(a.cpu_per_1k(), 3)} | {fmt(a.db_cpu_per_1k(), 3)} | {fmt(mix['usage'].peak_rss_mb)} | {fmt(mix['usage'].other_cpu)} | "
            f"{fmt(mix['usage'].steal_pct)} |"
        )
    lines += ["", "Closed-loop latencies (queueing at saturation, not corrected), for reference:", "",
              "| Scenario | p50 ms | p99 ms | p99.9 ms | statuses | client errors |", "|---|---:|---:|---:|---|---|"]
    for r in results.values():
        if r.available and r.capacity:
            c = r.capacity
            lines.append(f"| {r.title} | {fmt(c.p50, 2)} | {fmt(c.p99, 2)} | {fmt(c.p999, 2)} | "
                         f"{', '.join(f'{k}: {v}' for k, v in sorted(c.statuses.items()))} | "
                         f"{', '.join(f'{k}: {v}' for k, v in c.error_kinds.items()) or 'none'} |")
    if mix:
        lines += ["", "Mix by class (merged per-request records of all oha processes, corrected latencies):", "",
                  "| Class | req/s | p50 ms | p95 ms | p99 ms | p99.9 ms |", "|---|---:|---:|---:|---:|---:|"]
        for cls, o in mix["classes"].items():
            lines.append(f"| {cls} | {fmt(o.rps, 0)} | {fmt(o.p50, 2)} | {fmt(o.p95, 2)} | {fmt(o.p99, 2)} | {fmt(o.p999, 2)} |")
        lines.append("")
        lines.append("Statuses at the constant rate: " + ", ".join(f"{k}: {v}" for k, v in sorted(mix["statuses"].items()))
                     + f". The single scenarios predicted {fmt(mix['predicted'], 0)}/s for this mix; its capacity was "
                     "measured by offering 1.5 times that. The mix's CPU columns are per 1,000 requests at the constant rate.")

    if rls_pairs:
        lines += ["", "## Row-level security", "",
                  "Closed-loop runs of half the duration each, back to back in the order without, with, with, "
                  "without (RLS disabled on the benchmark database's tables, then enabled and forced again; the SQL "
                  "floor through pgbench as panels_app). Cost = 1 − with/without; target ≤ 15%.", "",
                  "| Scenario | without RLS req/s | with RLS req/s | cost (throughput) | server CPU s/1k without → with | DB CPU s/1k without → with | cost (CPU per request) |",
                  "|---|---:|---:|---:|---|---|---:|"]
        for key, (title, on, off) in rls_pairs.items():
            cpu_off = off.cpu_per_1k() + off.db_cpu_per_1k()
            cpu_on = on.cpu_per_1k() + on.db_cpu_per_1k()
            lines.append(f"| {title} | {fmt(off.rps, 0)} | {fmt(on.rps, 0)} | {(1 - on.rps / off.rps):.1%} | "
                         f"{fmt(off.cpu_per_1k(), 3)} → {fmt(on.cpu_per_1k(), 3)} | "
                         f"{fmt(off.db_cpu_per_1k(), 3)} → {fmt(on.db_cpu_per_1k(), 3)} | {(1 - cpu_off / cpu_on):.1%} |")
        lines += ["", "On a machine shared with other builds the throughput of two runs a minute apart moves by "
                  "more than the effect measured; the CPU spent per request (server + PostgreSQL backends) is the "
                  "steadier measure of what RLS adds (cost = 1 − CPU without / CPU with)."]

    lines += ["", "## Targets", "", "| Target | Measured | Met |", "|---|---|---|"]
    # The target is the endpoint as the service runs it, with its cache. The same figures with the
    # cache off (every read from PostgreSQL) follow for reference: what they would score, not a verdict.
    for key, label in (("get_panel", "GET /api/panels/{id}"),
                       ("get_panel_db", "(reference, no target) GET /api/panels/{id}, cache off")):
        reference = key == "get_panel_db"
        gp = results.get(key)
        if not (gp and gp.capacity):
            continue
        half = 0.5 * pg.rps
        runs = gp.at_rate_runs
        met_runs = sum(1 for o in runs if o.p99 < 10)
        at_target = gp.capacity.rps >= half
        lines.append(f"| {label} ≥ ½ pgbench -S ({fmt(half, 0)}/s) | {fmt(gp.capacity.rps, 0)}/s "
                     f"({ratio(gp.capacity.rps, pg.rps)} of the ceiling; {gp.capacity.rps / REFERENCE['get_panel'][0]:.1f}× the Node.js service) | "
                     f"{shown('yes' if at_target else 'no', reference)} |")
        per_run = p99_list(runs) or "–"
        control = p99_list(gp.control_runs)
        if not (at_target and runs):
            verdict = "no"
        elif met_runs == len(runs):
            verdict = "yes"
        else:
            verdict = f"no: {met_runs} of {len(runs)} runs"
        lines.append(f"| … with p99 < 10 ms at that load | p99 per {DURATION:g}-s run: {per_run}, at "
                     f"{fmt(gp.at_rate.offered if gp.at_rate else None, 0)}/s ({gp.note}) | {shown(verdict, reference)} |")
        if control:
            lines.append(f"| (control, no target) GET /health at the same rate after each run: the machine's own tail | "
                         f"p99 {control} | – |")
    cp = results.get("create_panel")
    if cp and cp.capacity:
        lines.append(f"| POST /api/panels ≥ 20 × 440 = 8,800/s | {fmt(cp.capacity.rps, 0)}/s ({cp.capacity.rps / 440:.1f}×) | "
                     f"{'yes' if cp.capacity.rps >= 8800 else 'no'} |")
    lp = results.get("list_panels")
    if lp and lp.capacity:
        lines.append(f"| GET /api/panels (Node.js: 270/s; no target) | {fmt(lp.capacity.rps, 0)}/s ({lp.capacity.rps / 270:.1f}×) | – |")
    if mix:
        rss = mix["usage"].peak_rss_mb
        lines.append(f"| Peak RSS under the mix < 100 MB (Node.js: {REFERENCE_RSS_MB} MB) | {fmt(rss)} MB | {'yes' if rss < 100 else 'no'} |")
    if "get_panel" in rls_pairs:
        _, on_o, off_o = rls_pairs["get_panel"]
        cost = 1 - on_o.rps / off_o.rps
        cpu_cost = 1 - (off_o.cpu_per_1k() + off_o.db_cpu_per_1k()) / (on_o.cpu_per_1k() + on_o.db_cpu_per_1k())
        lines.append(f"| RLS costs ≤ 15% of GET /api/panels/{{id}} | {cost:.1%} of throughput, {cpu_cost:.1%} of CPU per request | "
                     f"{'yes' if max(cost, cpu_cost) <= 0.15 else 'no'} |")

    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def p99_list(runs: list[Outcome]) -> str:
    """Each run's p99 with the steal it suffered, in the order they ran."""
    return "; ".join(f"{fmt(o.p99, 2)} ms (steal {fmt(o.usage.steal_pct)}%)" for o in runs)


def shown(verdict: str, reference: bool) -> str:
    """A target's verdict, or for a reference row what it would have been."""
    return f"– (would be {verdict})" if reference else verdict


def as_json(pg, floor, create_floor, results, mix, rls_pairs) -> dict:
    def o(x: Outcome | None):
        if x is None:
            return None
        d = {k: v for k, v in x.__dict__.items() if k != "usage"}
        d["usage"] = x.usage.__dict__
        return d

    return {
        "pgbench": o(pg), "sql_floor": o(floor), "create_floor": o(create_floor),
        "scenarios": {k: {"title": r.title, "available": r.available, "capacity": o(r.capacity), "at_rate": o(r.at_rate),
                          "at_rate_runs": [o(x) for x in r.at_rate_runs],
                          "control_runs": [o(x) for x in r.control_runs]}
                      for k, r in results.items()},
        "mix": None if not mix else {"offered": mix["offered"], "achieved": mix["achieved"], "errors": mix["errors"],
                                     "capacity": mix["capacity"], "predicted": mix["predicted"],
                                     "all": o(mix["all"]), "classes": {k: o(v) for k, v in mix["classes"].items()}},
        "rls": {k: {"with": o(on), "without": o(off)} for k, (_, on, off) in rls_pairs.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
