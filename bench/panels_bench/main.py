"""A benchmark run, phase by phase: the database's ceilings, the server's start and the checks
the scenarios rely on, the single-endpoint scenarios, the mix, the login, the row-level
security comparison, and the report."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .drive import (CREATE_BODY, UPDATE_BODY, Load, Outcome, Result, Server, ServerDied, drive, http, merge,
                    rss_mb, run_mix, server_environment)
from . import worklist
from .report import as_json, render
from .seed import (RUNTIME_ROLE, Tenant, create_panel_script, db_url, pgbench, read_panel_script, rls_tables,
                   set_rls, tenant)
from .settings import (BASE, CONNECTIONS, DB, DURATION, LATENCY_RUNS, LOAD_FRACTION, OUT, PGBENCH_CLIENTS,
                       PGBENCH_DB, RLS_MODE, log, selected)

NO_CACHE = {"CACHE_ENABLED": "false"}
# Scenarios that run on a server started with other settings.
SCENARIO_ENV = {"get_panel_db": NO_CACHE}
# The latency targets: measured LATENCY_RUNS times at half the pgbench ceiling, each run with its
# control.
LATENCY_TARGETS = ("get_panel", "get_panel_db")
# RLS is measured on the database path (cache off): a cache hit reads no table at all.
RLS_READ_KEYS = ("get_panel", "list_panels", "get_view", "rows")
# Without, with, with, without (half the duration each, back to back): a load the rest of the
# machine puts on the cores that drifts during the four runs weighs on both sides alike.
ABBA = (False, True, True, False)
LOGIN_EMAIL = "login@bench.example"
LOGIN_PASSWORD = "bench-password-123"
HEALTH = Load("GET", [f"{BASE}/health"])


@dataclass
class Bench:
    """What the phases share: the server under test, the scratch directory, the tokens' secret,
    the tables under row-level security, and what has been measured and noted so far."""

    stamp: str
    tmp: Path
    secret: str
    server: Server
    tables: list[str]
    results: dict[str, Result] = field(default_factory=dict)
    rls_pairs: dict[str, tuple[str, Outcome, Outcome]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tenant(self, k: int) -> Tenant:
        return tenant(self.secret, k)


@dataclass
class Tenants:
    """Whom the scenarios act as (bench/README.md, Scenarios)."""

    reads: Tenant  # t003: the read scenarios and the SQL floor of GET /api/panels/{id}
    writes: Tenant  # t004: the updates
    creates: Tenant  # t050: the creates
    big: Tenant  # t001, the largest: the rows page
    floor_creates: Tenant  # t060: the SQL floor of POST /api/panels


@dataclass
class Floors:
    """The exact SQL of two endpoints through pgbench: the database's share of their cost."""

    read: Outcome
    create: Outcome
    read_script: Path  # replayed by the row-level security comparison


@dataclass
class Scenario:
    key: str
    title: str
    load: Load
    connections: int = CONNECTIONS


def new_bench() -> tuple[Bench, str]:
    """The run's stamp, scratch directory, secret and server (not started yet); and the report's
    line on Redis."""
    tmp = Path(tempfile.mkdtemp(prefix="panels-bench-"))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    secret = secrets.token_urlsafe(48)
    server_env, redis_note = server_environment(secret, db_url(DB))
    server = Server(server_env, OUT / f"{stamp}-server.log")
    return Bench(stamp, tmp, secret, server, rls_tables()), redis_note


def seeded_tenants(bench: Bench) -> Tenants:
    return Tenants(reads=bench.tenant(3), writes=bench.tenant(4), creates=bench.tenant(50), big=bench.tenant(1),
                   floor_creates=bench.tenant(60))


# ---------------------------------------------------------------------------------------------
# The database's ceilings


def logged_pgbench(db: str, tmp: Path, extra: list[str], pg_env: dict[str, str] | None = None) -> Outcome:
    outcome = pgbench(db, tmp, extra, pg_env)
    log(f"  {outcome.rps:,.0f} tps, p99 {outcome.p99:.2f} ms")
    return outcome


def measure_pgbench_ceiling(bench: Bench) -> Outcome:
    """pgbench -S: a one-row indexed read straight to PostgreSQL, the ceiling every figure is set
    against."""
    log(f"pgbench -S -M prepared, {PGBENCH_CLIENTS} clients, {DURATION:g} s")
    return logged_pgbench(PGBENCH_DB, bench.tmp, ["-S"])


def measure_sql_floors(bench: Bench, tenants: Tenants) -> Floors:
    """The SQL of GET /api/panels/{id} on a cache miss and of POST /api/panels, as the runtime
    role."""
    read_script = read_panel_script(bench.tmp, tenants.reads)
    log("pgbench: the SQL of GET /api/panels/{id} on a cache miss (read_panel: one statement)")
    read = logged_pgbench(DB, bench.tmp, ["-f", str(read_script)], RUNTIME_ROLE)
    create_script = create_panel_script(bench.tmp, tenants.floor_creates)
    log("pgbench: the SQL of POST /api/panels (create_panels with one panel: one statement)")
    create = logged_pgbench(DB, bench.tmp, ["-f", str(create_script)], RUNTIME_ROLE)
    return Floors(read, create, read_script)


# ---------------------------------------------------------------------------------------------
# The server's first start and the checks the scenarios rely on


def start_server(bench: Bench) -> float:
    """Starts the server; its resident memory right after, in MB."""
    bench.server.start()
    idle_rss = rss_mb(bench.server.pid)
    log(f"server pid {bench.server.pid} on {BASE} (RLS {'on' if RLS_MODE != 'off' else 'off'}), "
        f"{idle_rss:.1f} MB resident")
    return idle_rss


def register_login_user(bench: Bench) -> None:
    status, _, body = http("POST", "/api/auth/register", body={
        "email": LOGIN_EMAIL, "password": LOGIN_PASSWORD, "name": "Login Bench",
        "tenantSlug": "bench-login", "tenantName": "Login bench"})
    if status not in (201, 409):
        bench.notes.append(f"Registering the login user answered {status}: {body}")


def rows_available(bench: Bench, big: Tenant) -> bool:
    """Whether this build serves the rows page; the report shows it as not available otherwise."""
    status, _, body = http("GET", f"/api/panels/{big.panel_ids()[0]}/rows?limit=50", big.token)
    if status == 200:
        return True
    code = body.get("code") if isinstance(body, dict) else body
    bench.notes.append(f"GET /api/panels/{{id}}/rows answered {status} ({code}) on this build: "
                       "reported as not available.")
    return False


def check_if_match(bench: Bench, writes: Tenant) -> None:
    """If-Match: a fresh ETag succeeds and a stale one answers 412 (checked once, by hand)."""
    pid = writes.panel_ids()[0]
    s1, h1, _ = http("GET", f"/api/panels/{pid}", writes.token)
    etag = h1.get("etag", "")
    s2, h2, _ = http("PUT", f"/api/panels/{pid}", writes.token, json.loads(UPDATE_BODY), {"If-Match": etag})
    s3, _, _ = http("PUT", f"/api/panels/{pid}", writes.token, json.loads(UPDATE_BODY), {"If-Match": etag})
    bench.notes.append(f"If-Match check before the PUT scenarios: GET → {s1} with ETag {etag}; PUT with it → {s2} "
                       f"(new ETag {h2.get('etag', '?')}); PUT again with the now stale tag → {s3}.")


# ---------------------------------------------------------------------------------------------
# The scenarios


def panel_urls(t: Tenant) -> list[str]:
    return [f"{BASE}/api/panels/{p}" for p in t.panel_ids()]


def single_scenarios(tenants: Tenants) -> dict[str, Scenario]:
    """The single-endpoint scenarios, in the order they run."""
    reads, writes, creates, big = tenants.reads, tenants.writes, tenants.creates, tenants.big
    stale = writes.panel_ids()[0]
    scenarios = [
        Scenario("health", "GET /health", HEALTH),
        Scenario("get_panel", "GET /api/panels/{id}", Load("GET", panel_urls(reads), [reads.auth])),
        Scenario("get_panel_db", "GET /api/panels/{id}, cache off (every read from PostgreSQL)",
                 Load("GET", panel_urls(reads), [reads.auth])),
        Scenario("list_panels", "GET /api/panels", Load("GET", [f"{BASE}/api/panels"], [reads.auth])),
        Scenario("get_view", "GET /api/views/{id}",
                 Load("GET", [f"{BASE}/api/views/{v}" for v in reads.view_ids()], [reads.auth])),
        Scenario("rows", "GET /api/panels/{id}/rows?limit=50",
                 Load("GET", [f"{BASE}/api/panels/{p}/rows?limit=50" for p in big.panel_ids()], [big.auth])),
        Scenario("update_panel", "PUT /api/panels/{id} (If-Match: *)",
                 Load("PUT", panel_urls(writes), [writes.auth, "If-Match: *"], UPDATE_BODY)),
        Scenario("update_stale", "PUT /api/panels/{id} (stale If-Match → 412)",
                 Load("PUT", [f"{BASE}/api/panels/{stale}"], [writes.auth, f'If-Match: "panel-{stale}-v0"'],
                      UPDATE_BODY, expect=(412,))),
        Scenario("create_panel", "POST /api/panels",
                 Load("POST", [f"{BASE}/api/panels"], [creates.auth], CREATE_BODY, (201,))),
    ]
    return {s.key: s for s in scenarios}


def login_scenario() -> Scenario:
    # Last: argon2's 19 MiB blocks stay resident after a burst of logins (see the README).
    return Scenario("login", "POST /api/auth/login (argon2)",
                    Load("POST", [f"{BASE}/api/auth/login"], [],
                         json.dumps({"email": LOGIN_EMAIL, "password": LOGIN_PASSWORD})), 4)


def run_single_scenarios(bench: Bench, scenarios: dict[str, Scenario], ceiling: Outcome,
                         rows_served: bool) -> None:
    """Every selected single-endpoint scenario, in order; the rows page only if it is served."""
    for key, scenario in scenarios.items():
        if not selected(key):
            continue
        if key == "rows" and not rows_served:
            bench.results[key] = Result(key, scenario.title, available=False)
        else:
            run_scenario(bench, scenario, ceiling)


def run_scenario(bench: Bench, scenario: Scenario, ceiling: Outcome) -> None:
    """One scenario, tried once more if the server dies under it (then left as not available)."""
    for attempt in (1, 2):
        try:
            return measure_scenario(bench, scenario, ceiling)
        except ServerDied as died:
            bench.notes.append(f"{scenario.title}: {died} (attempt {attempt}; see the server log)"
                               f"{'; run again' if attempt == 1 else ''}.")
            log(f"  {died}")
            if attempt == 2:
                bench.results[scenario.key].available = False


def measure_scenario(bench: Bench, scenario: Scenario, ceiling: Outcome) -> None:
    """Capacity, then latency at a constant rate, on a freshly started server: its peak RSS is its
    own (memory the allocator keeps after one scenario would otherwise show up as the next one's
    peak)."""
    res = Result(scenario.key, scenario.title)
    bench.results[scenario.key] = res
    bench.server.restart(SCENARIO_ENV.get(scenario.key))
    log(f"{scenario.title}: capacity ({scenario.connections} connections, closed loop)")
    res.capacity = drive(scenario.load, bench.server, bench.tmp, scenario.connections, None, warmup=True)
    cap = res.capacity.rps
    if scenario.key == "update_stale":
        log(f"  {cap:,.0f}/s, errors {res.capacity.errors}")
        return
    rate, res.note = latency_rate(scenario.key, cap, ceiling)
    log(f"  {cap:,.0f}/s, errors {res.capacity.errors}; constant rate {rate:,.0f}/s")
    measure_latency(bench, scenario, res, rate)


def latency_rate(key: str, capacity: float, ceiling: Outcome) -> tuple[float, str]:
    """The constant rate of the latency runs, with the note saying why: LOAD_FRACTION of the
    capacity, or for a latency target half the pgbench ceiling if the capacity reaches it."""
    if key not in LATENCY_TARGETS:
        return LOAD_FRACTION * capacity, ""
    target = 0.5 * ceiling.rps
    if capacity >= target:
        return target, "latency measured at half the pgbench -S ceiling (the target load)"
    return LOAD_FRACTION * capacity, (f"capacity below half the pgbench ceiling ({target:,.0f}/s): latency measured "
                                      f"at {LOAD_FRACTION:.0%} of capacity")


def measure_latency(bench: Bench, scenario: Scenario, res: Result, rate: float) -> None:
    """The constant-rate runs: LATENCY_RUNS for a latency target, each followed by its control,
    one otherwise."""
    target = scenario.key in LATENCY_TARGETS
    conns = max(scenario.connections, 8)
    for _ in range(LATENCY_RUNS if target else 1):
        run = drive(scenario.load, bench.server, bench.tmp, conns, rate, warmup=False)
        res.at_rate_runs.append(run)
        log(f"  p50 {run.p50:.2f} ms, p99 {run.p99:.2f} ms, errors {run.errors}, steal {run.usage.steal_pct:.1f}%")
        if target:
            res.control_runs.append(measure_control(bench, conns, rate))


def measure_control(bench: Bench, conns: int, rate: float) -> Outcome:
    """GET /health at the same rate on the same server: the tail the machine itself adds."""
    control = drive(HEALTH, bench.server, bench.tmp, conns, rate, warmup=False)
    log(f"  control GET /health at the same rate: p99 {control.p99:.2f} ms, "
        f"steal {control.usage.steal_pct:.1f}%")
    return control


def run_mix_scenario(bench: Bench, rows_served: bool) -> dict | None:
    """The mix on a freshly started server, tried once more if the server dies under it."""
    for attempt in (1, 2):
        bench.server.restart()
        try:
            mix = run_mix(bench.server, bench.tmp, bench.tenant, bench.results, rows_served)
            bench.server.check_alive()
        except ServerDied as died:
            bench.notes.append(f"Mix: {died} (attempt {attempt}).")
            continue
        log(f"mix: {mix['achieved']:,.0f}/s of {mix['offered']:,.0f}/s offered, p99 {mix['all'].p99:.2f} ms, "
            f"peak RSS {mix['usage'].peak_rss_mb:.1f} MB")
        return mix
    return None


# ---------------------------------------------------------------------------------------------
# Row-level security off and on


def compare_rls(bench: Bench, scenarios: dict[str, Scenario], read_script: Path) -> None:
    """The read floor and each measured read scenario without and with row-level security (a
    table setting of the bench database only), switched back on at the end."""
    log("row-level security off/on pairs for the read scenarios (table setting of the bench database only)")
    bench.server.stop()
    try:
        half = DURATION / 2
        compare_rls_floor(bench, read_script, half)
        for key in RLS_READ_KEYS:
            if key in bench.results and bench.results[key].capacity is not None:
                compare_rls_scenario(bench, scenarios[key], half)
    finally:
        bench.server.stop()
        set_rls(bench.tables, True)


def compare_rls_floor(bench: Bench, read_script: Path, duration: float) -> None:
    on, off = abba(bench, lambda: pgbench(DB, bench.tmp, ["-f", str(read_script)], RUNTIME_ROLE, duration=duration))
    bench.rls_pairs["sql_floor"] = ("SQL of GET /api/panels/{id} (pgbench)", on, off)
    log(f"  sql floor: {off.rps:,.0f}/s without RLS, {on.rps:,.0f}/s with")


def compare_rls_scenario(bench: Bench, scenario: Scenario, duration: float) -> None:
    """A closed-loop scenario on a server started for each run with the cache off; left out if
    the server dies."""
    def measure() -> Outcome:
        bench.server.start(NO_CACHE)
        return drive(scenario.load, bench.server, bench.tmp, scenario.connections, None, warmup=True,
                     duration=duration)

    try:
        on, off = abba(bench, measure)
    except ServerDied as died:
        bench.notes.append(f"RLS comparison of {scenario.title}: {died}; left out.")
        return
    bench.rls_pairs[scenario.key] = (scenario.title, on, off)
    log(f"  {scenario.key}: {off.rps:,.0f}/s without RLS, {on.rps:,.0f}/s with")


def abba(bench: Bench, measure: Callable[[], Outcome]) -> tuple[Outcome, Outcome]:
    """`measure` in the ABBA order, the server stopped while the setting changes: (with, without),
    the two runs of each side merged."""
    runs: dict[bool, list[Outcome]] = {False: [], True: []}
    for enabled in ABBA:
        bench.server.stop()
        set_rls(bench.tables, enabled)
        runs[enabled].append(measure())
    return merge(runs[True]), merge(runs[False])


# ---------------------------------------------------------------------------------------------
# The report


def write_report(bench: Bench, ceiling: Outcome, floors: Floors, mix: dict | None, load_info: dict,
                 wl: worklist.Worklist | None) -> None:
    """bench/out/<stamp>.md, latest.md and <stamp>.json; the Markdown also on stdout."""
    report = render(bench.stamp, ceiling, floors.read, floors.create, bench.results, mix, bench.rls_pairs,
                    bench.notes, load_info)
    if wl is not None:
        report += "\n" + "\n".join(worklist.render(wl))
    path = OUT / f"{bench.stamp}.md"
    path.write_text(report)
    (OUT / "latest.md").write_text(report)
    figures = as_json(ceiling, floors.read, floors.create, bench.results, mix, bench.rls_pairs)
    (OUT / f"{bench.stamp}.json").write_text(json.dumps(figures, indent=2))
    print(report)
    log(f"report: {path} (and bench/out/latest.md)")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    bench, redis_note = new_bench()
    load_info = {"start": os.getloadavg(), "redis": redis_note}
    tenants = seeded_tenants(bench)
    try:
        ceiling = measure_pgbench_ceiling(bench)
        set_rls(bench.tables, RLS_MODE != "off")
        floors = measure_sql_floors(bench, tenants)
        idle_rss = start_server(bench)
        register_login_user(bench)
        rows_served = rows_available(bench, tenants.big)
        check_if_match(bench, tenants.writes)
        scenarios = single_scenarios(tenants)
        run_single_scenarios(bench, scenarios, ceiling, rows_served)
        mix = run_mix_scenario(bench, rows_served) if selected("mix") else None
        if selected("login"):
            run_scenario(bench, login_scenario(), ceiling)
        wl = None
        if selected("worklist"):
            bench.server.restart()
            wl = worklist.run(bench.server, bench.tmp, bench.secret, DURATION)
        if RLS_MODE == "both":
            compare_rls(bench, scenarios, floors.read_script)
    finally:
        bench.server.stop()
        if bench.tables:
            set_rls(bench.tables, True)
        shutil.rmtree(bench.tmp, ignore_errors=True)

    load_info["end"] = os.getloadavg()
    bench.notes.append(f"The server holds {idle_rss:.1f} MB resident right after start.")
    write_report(bench, ceiling, floors, mix, load_info, wl)
    return 0
