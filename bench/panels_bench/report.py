"""The report: the Markdown page (bench/README.md describes its tables) and the raw figures as
JSON."""

from __future__ import annotations

import math
import os

from .drive import Outcome
from .seed import psql
from .settings import (COMPRESSION, CONNECTIONS, DURATION, LOAD_FRACTION, PGBENCH_CLIENTS, POOL, RLS_MODE,
                       RUNTIME_THREADS, WARMUP)

# Figures of the Node.js service this one replaces, on a 2-core machine against the same
# PostgreSQL (from the issue).
REFERENCE = {"get_panel": (650, 310.0), "list_panels": (270, None), "create_panel": (440, None)}
REFERENCE_RSS_MB = 470


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.2f}"


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
