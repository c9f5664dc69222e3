"""Driving the load: the release server as a child process, oha's invocations and their JSON,
what the machine spent during each run (from /proc), and the mix of several oha processes.

Every figure comes from a tool's own output or from /proc:
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
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .settings import (BASE, COMPRESSION, CONNECTIONS, DB, DURATION, LOAD_FRACTION, OHA, POOL, PORT, REDIS_URL,
                       RUNTIME_THREADS, SERVER_BIN, WARMUP, log)

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def redis_answers(url: str) -> bool:
    """PING over a plain socket (redis://host:port only; the standard library has no client)."""
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_environment(secret: str, database_url: str) -> tuple[dict[str, str], str]:
    """The release server's environment, and a line for the report saying which Redis it got."""
    server_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "production",
        "LOG_FORMAT": "json",
        "HOST": "127.0.0.1",
        "PORT": str(PORT),
        "DATABASE_URL": database_url,
        # The login role scripts/bench made (a member of panels_app only): production refuses to
        # serve requests on the owner connection.
        "DATABASE_APP_URL": os.environ.get("BENCH_APP_URL", ""),
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
    return server_env, redis_note


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

    def restart(self, extra: dict[str, str] | None = None) -> None:
        """A fresh process, so a scenario's peak RSS is its own."""
        self.stop()
        self.start(extra)

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


def merge(outcomes: list[Outcome]) -> Outcome:
    """Two runs of equal length as one: requests and CPU add up, rates average."""
    u = Usage()
    for o in outcomes:
        for k in ("server_cpu", "db_cpu", "loadgen_cpu", "machine_busy", "machine_total", "steal", "wall"):
            setattr(u, k, getattr(u, k) + getattr(o.usage, k))
    return Outcome(requests=sum(o.requests for o in outcomes), rps=sum(o.rps for o in outcomes) / len(outcomes),
                   errors=sum(o.errors for o in outcomes), usage=u)


def percentile(lat: list[float]) -> Callable[[float], float]:
    """The p-quantile of sorted latencies (the sample at rank p·n), NaN for none."""
    return lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")


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


def drive(load: Load, server: Server, tmp: Path, connections: int, rate: float | None,
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
# The scenarios' results and request bodies


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


# ---------------------------------------------------------------------------------------------
# The mix: several oha processes at proportional constant rates, one per (class, tenant), whose
# per-request records (sqlite, --db-url) are merged for exact percentiles.

MIX_TENANTS = [(1, 0.4), (2, 0.3), (10, 0.2), (30, 0.1)]
MIX_SHARES = {"read": 0.80, "create": 0.15, "update": 0.05}


def mix_read_parts(rows_available: bool) -> dict[str, float]:
    """The read share itself: 40% one panel, 20% the list, 20% a view, 20% rows (views take the
    rows' share when that endpoint is missing)."""
    if not rows_available:
        return {"get_panel": 0.4, "list_panels": 0.2, "get_view": 0.4}
    return {"get_panel": 0.4, "list_panels": 0.2, "get_view": 0.2, "rows": 0.2}


def predicted_mix_rate(results: dict[str, Result], read_parts: dict[str, float]) -> float:
    """What the single scenarios predict for the mix: the inverse of its time per request,
    weighted by share."""
    def cap(key: str, fallback: float) -> float:
        r = results.get(key)
        return r.capacity.rps if r and r.capacity and r.capacity.rps > 0 else fallback

    cost = sum(MIX_SHARES["read"] * share / cap(k, 1000) for k, share in read_parts.items())
    cost += MIX_SHARES["create"] / cap("create_panel", 500) + MIX_SHARES["update"] / cap("update_panel", 500)
    return 1 / cost


def mix_plan(offered: float, tenant, read_parts: dict[str, float]) -> list:
    """One (class, tenant slug, load, rate, connections) per oha process, the rates adding up to
    `offered`."""
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


def launch(procs: list, tmp: Path, duration: float,
           with_db: bool) -> list[tuple[str, Load, subprocess.Popen, Path | None]]:
    """Starts every process of a plan at once, each writing its per-request records to its own
    SQLite file when `with_db`."""
    running = []
    for cls, slug, load, rate, conns in procs:
        db = tmp / f"mix-{cls}-{slug}-{secrets.token_hex(3)}.db" if with_db else None
        args = oha_args(load, tmp, duration, conns, rate, db=db, threads=1)
        running.append((cls, load, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), db))
    return running


def collect(running) -> list[tuple[str, Load, str, Path | None]]:
    """Waits for every launched process: (class, load, oha's JSON, records file) each."""
    done = []
    for cls, load, proc, db in running:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"oha (mix {cls}) failed: {err.strip()[:500]}")
        done.append((cls, load, out, db))
    return done


def mix_capacity(tmp: Path, tenant, read_parts: dict[str, float], predicted: float) -> float:
    """What the mix answers when offered 1.5 times the prediction: the most this machine does."""
    overload = mix_plan(1.5 * predicted, tenant, read_parts)
    log(f"mix 80/15/5 across {len(MIX_TENANTS)} tenants: capacity, {1.5 * predicted:,.0f}/s offered "
        f"by {len(overload)} oha processes")
    if WARMUP > 0:
        collect(launch(overload, tmp, WARMUP, False))
    done = collect(launch(overload, tmp, DURATION, False))
    return sum(parse_oha(raw, load).requests for _, load, raw, _ in done) / DURATION


def latency_summary(lat: list[float]) -> Outcome:
    """Merged per-request latencies as one outcome over the run."""
    q = percentile(sorted(lat))
    return Outcome(requests=len(lat), rps=len(lat) / DURATION, p50=q(0.5), p95=q(0.95), p99=q(0.99), p999=q(0.999))


def run_mix(server: Server, tmp: Path, tenant, results: dict[str, Result], rows_available: bool) -> dict:
    """The mix at LOAD_FRACTION of its capacity (or at BENCH_MIX_RATE), like the single scenarios."""
    read_parts = mix_read_parts(rows_available)
    predicted = predicted_mix_rate(results, read_parts)
    if os.environ.get("BENCH_MIX_RATE"):
        capacity = None
        offered = float(os.environ["BENCH_MIX_RATE"])
    else:
        capacity = mix_capacity(tmp, tenant, read_parts, predicted)
        offered = LOAD_FRACTION * capacity
        log(f"  answered {capacity:,.0f}/s; constant rate {offered:,.0f}/s")
    procs = mix_plan(offered, tenant, read_parts)
    with Meter(server.pid, (DB,)) as m:
        finished = collect(launch(procs, tmp, DURATION, True))

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

    for cls, lat in per_class.items():
        out["classes"][cls] = latency_summary(lat)
    out["all"] = latency_summary([x for lat in per_class.values() for x in lat])
    out["all"].errors = out["errors"]
    out["all"].usage = m.usage
    out["all"].requests = total
    return out
