#!/usr/bin/env python3
"""The audit log's benchmark (scripts/bench-audit; bench/README.md, "Audit log").

1. Query: with AUDIT_ENTRIES (10 M) entries over AUDIT_TENANTS (100) organisations and three
   months, the admin's query for one entity (`GET /api/audit?entityType=panel&entityId=<random>`)
   over HTTP, p50/p95/p99, against two references measured in the same run on the same server:
   `GET /health` and the newest page (`GET /api/audit?limit=50`).
2. Write cost: `POST /api/panels` throughput of the binary with the audit log and of the one
   without it (AUDIT_BASE_BIN, built from the commit before it), each on a fresh database,
   alternated AUDIT_ROUNDS (2) times; the median of each and their ratio.

Environment (set by scripts/bench-audit): OHA, BENCH_SERVER_BIN, AUDIT_BASE_BIN, PG_URL (the
server, no database), AUDIT_ENTRIES, AUDIT_TENANTS, BENCH_DURATION (20), BENCH_CONNECTIONS (32).
"""

import datetime
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jwt import sign  # noqa: E402

OHA = os.environ["OHA"]
NEW_BIN = os.environ["BENCH_SERVER_BIN"]
BASE_BIN = os.environ.get("AUDIT_BASE_BIN", "")
PG = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
ENTRIES = int(os.environ.get("AUDIT_ENTRIES", "10000000"))
TENANTS = int(os.environ.get("AUDIT_TENANTS", "100"))
DURATION = int(os.environ.get("BENCH_DURATION", "20"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("AUDIT_ROUNDS", "2"))
PHASES = os.environ.get("AUDIT_PHASES", "query,write").split(",")
PORT = 3917
BASE = f"http://127.0.0.1:{PORT}"
SECRET = secrets.token_hex(32)
OUT = Path(__file__).parent / "out"
TMP = OUT / "tmp"


def log(msg: str) -> None:
    print(f"[bench-audit {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def psql(db: str, sql: str | None = None, file: str | None = None, variables: dict | None = None) -> str:
    args = ["psql", f"{PG}/{db}", "-XAtq", "-v", "ON_ERROR_STOP=1"]
    for k, v in (variables or {}).items():
        args += ["-v", f"{k}={v}"]
    args += ["-f", file] if file else ["-c", sql]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def fresh_database(name: str, binary: str) -> str:
    psql("postgres", f'drop database if exists "{name}" with (force)')
    url = f"{PG}/{name}"
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": url, "APP_ENV": "development", "RUST_LOG": "warn",
           "JWT_SECRET": SECRET}
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    return url


class Server:
    def __init__(self, binary: str, url: str, log_name: str):
        TMP.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ["PATH"], "APP_ENV": "development", "LOG_FORMAT": "json", "RUST_LOG": "warn",
            "HOST": "127.0.0.1", "PORT": str(PORT), "DATABASE_URL": url, "DATABASE_MAX_CONNECTIONS": "10",
            "JWT_SECRET": SECRET, "RATE_LIMIT_TENANT_RPS": "1000000", "RATE_LIMIT_TENANT_BURST": "10000000",
            "RUNTIME_THREADS": os.environ.get("BENCH_RUNTIME_THREADS", "1"),
        }
        if os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"):
            env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
        self.proc = subprocess.Popen([binary, "serve", "--no-workers"], env=env,
                                     stdout=open(TMP / log_name, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited with {self.proc.returncode}; see {TMP / log_name}")
            try:
                with urllib.request.urlopen(f"{BASE}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        sys.exit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def oha(url: str, headers: list[str], method: str = "GET", body: str | None = None, regex: bool = False,
        duration: int = DURATION, connections: int = CONNECTIONS) -> dict:
    args = [OHA, "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(connections), "-m", method]
    for h in headers:
        args += ["-H", h]
    if body is not None:
        args += ["-d", body, "-T", "application/json"]
    if regex:
        args.append("--rand-regex-url")
    args.append(url)
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr[:500]}")
    return json.loads(out.stdout)


def figures(result: dict) -> dict:
    p = result["latencyPercentiles"]
    codes = result.get("statusCodeDistribution", {})
    return {"rps": result["summary"]["requestsPerSec"], "p50": p["p50"] * 1000, "p95": p["p95"] * 1000,
            "p99": p["p99"] * 1000, "codes": codes}


def query_phase(report: list[str]) -> None:
    db = "panels_bench_audit"
    url = fresh_database(db, NEW_BIN)
    log(f"seeding {ENTRIES:,} entries over {TENANTS} organisations")
    started = time.monotonic()
    psql(db, file=str(Path(__file__).parent / "audit_seed.sql"), variables={"entries": ENTRIES, "tenants": TENANTS})
    seeded = time.monotonic() - started
    size = psql(db, "select pg_size_pretty(sum(pg_total_relation_size(c.oid))) from pg_inherits i "
                    "join pg_class c on c.oid = i.inhrelid where i.inhparent = 'audit_entry'::regclass")
    per_tenant = ENTRIES // TENANTS
    tenant = "bench-42"
    token = sign(SECRET, tenant, "admin@bench.example", "admin", "bench-admin")
    auth = [f"Authorization: Bearer {token}"]
    # The plan of the entity query, as the application runs it (its role, its tenant).
    plan = psql(db, "begin; set local role panels_app; select set_config('app.tenant', 'bench-42', true); "
                    "explain (analyze, buffers, costs off) select id, seq, at from audit_entry "
                    "where tenant_id = 'bench-42' and entity_type = 'panel' and entity_id = '1234' "
                    "order by at desc, id desc limit 101; rollback")
    server = Server(NEW_BIN, url, "audit-query.log")
    try:
        conns = 8
        oha(f"{BASE}/health", [], duration=3, connections=conns)
        health = figures(oha(f"{BASE}/health", [], connections=conns))
        newest = figures(oha(f"{BASE}/api/audit?limit=50", auth, connections=conns))
        entity_url = (BASE.replace(".", r"\.") +
                      r"/api/audit\?entityType=panel&entityId=[1-9][0-9]{0,3}&limit=50")
        entity = figures(oha(entity_url, auth, regex=True, connections=conns))
    finally:
        server.stop()
    report += [
        "## 1. The admin's query for one entity",
        "",
        f"{ENTRIES:,} entries ({per_tenant:,} per organisation, {TENANTS} organisations, 85 days over "
        f"4 monthly partitions), {size} with indexes; seeded in {seeded:.0f} s. "
        f"{conns} connections for {DURATION} s each, one server (RUNTIME_THREADS=1), Redis on.",
        "",
        "| request | req/s | p50 ms | p95 ms | p99 ms | statuses |",
        "|---|---:|---:|---:|---:|---|",
        row("GET /health (reference)", health),
        row("GET /api/audit?limit=50 (newest page)", newest),
        row("GET /api/audit?entityType=panel&entityId=<random 1–9999>&limit=50", entity),
        "",
        f"Entity query p95 / health p95: {entity['p95'] / health['p95']:.1f}×. Target: p95 < 50 ms "
        f"({'met' if entity['p95'] < 50 else 'NOT met'}).",
        "",
        "The entity query's plan, as `panels_app` for one organisation:",
        "",
        "```",
        plan,
        "```",
        "",
    ]


def row(name: str, f: dict) -> str:
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(f["codes"].items()))
    return f"| {name} | {f['rps']:.0f} | {f['p50']:.2f} | {f['p95']:.2f} | {f['p99']:.2f} | {codes} |"


def write_phase(report: list[str]) -> None:
    if not BASE_BIN:
        report += ["## 2. Write cost", "", "Skipped: AUDIT_BASE_BIN not set.", ""]
        return
    results: dict[str, list[dict]] = {"without": [], "with": []}
    body = json.dumps({"name": "Audit bench panel", "description": "created by bench/audit.py"})
    for n in range(ROUNDS):
        for label, binary in (("without", BASE_BIN), ("with", NEW_BIN)):
            db = f"panels_bench_audit_{label}"
            url = fresh_database(db, binary)
            token = sign(SECRET, "bench-writes", "admin@bench.example", "admin", "bench-admin")
            server = Server(binary, url, f"audit-write-{label}.log")
            try:
                auth = [f"Authorization: Bearer {token}"]
                oha(f"{BASE}/api/panels", auth, "POST", body, duration=3)
                result = figures(oha(f"{BASE}/api/panels", auth, "POST", body))
            finally:
                server.stop()
            entries = psql(db, "select count(*) from audit_entry") if label == "with" else "-"
            panels = psql(db, "select count(*) from panel")
            result["entries"], result["panels"] = entries, panels
            results[label].append(result)
            log(f"round {n + 1} {label}: {result['rps']:.0f} req/s, p95 {result['p95']:.1f} ms, "
                f"{panels} panels, {entries} audit entries")
    med = {k: statistics.median(r["rps"] for r in v) for k, v in results.items()}
    report += [
        "## 2. What the audit write costs `POST /api/panels`",
        "",
        f"One organisation, {CONNECTIONS} connections, {DURATION} s per run (after 3 s of warm-up), "
        f"each run on a fresh database; the binary without the audit log is `{Path(BASE_BIN).name}`.",
        "",
        "| run | binary | req/s | p50 ms | p95 ms | p99 ms | panels | audit entries |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in ("without", "with"):
        for i, r in enumerate(results[label]):
            report.append(f"| {i + 1} | {label} audit | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
                          f"{r['p99']:.2f} | {r['panels']} | {r['entries']} |")
    cost = 1 - med["with"] / med["without"]
    report += [
        "",
        f"Median throughput: {med['without']:.0f} req/s without, {med['with']:.0f} req/s with "
        f"(ratio {med['with'] / med['without']:.3f}, a cost of {cost * 100:.1f} %). Target: < 10 % "
        f"({'met' if cost < 0.10 else 'NOT met'}).",
        "",
    ]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = [f"# Audit log benchmark, {stamp}", "", f"Machine: {os.cpu_count()} cores.", ""]
    if "query" in PHASES:
        query_phase(report)
    if "write" in PHASES:
        write_phase(report)
    text = "\n".join(report)
    (OUT / f"audit-{stamp}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
