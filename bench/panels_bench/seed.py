"""The seeded database as the driver uses it (scripts/bench creates it and runs bench/seed.sql):
psql, row-level security switched per table, pgbench against it, and its tenants' builders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jwt  # bench/jwt.py (bench/run.py puts bench/ first on the path)

from .drive import Meter, Outcome, percentile
from .settings import DB, DURATION, PG_HOST, PG_PORT, PG_USER, PGBENCH_CLIENTS, WARMUP


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
# The seeded tenants


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


def tenant(secret: str, k: int) -> Tenant:
    """Tenant k with a token for its builder (role builder, so every panel read checks the ACL)."""
    t = f"t{k:03d}"
    return Tenant(k, jwt.sign(secret, t, f"builder@{t}.example", "builder", f"builder-{k}"))


# ---------------------------------------------------------------------------------------------
# pgbench


# As the runtime role, like the server's pool, so row-level security applies.
RUNTIME_ROLE = {"PGOPTIONS": "-c role=panels_app"}


# What GET /api/panels/{id} sends on a cache miss: one statement, whose function binds the tenant
# for the statement's own transaction (migration 0900, src/panels/repo.rs).
PANEL_SQL = "select * from read_panel('{t}', :id, '{email}', '{sub}');\n"


# What POST /api/panels without an Idempotency-Key sends: one statement inserting the panel and
# its owner entry, committed by itself.
# What the server sends for one panel (src/panels/batch.rs NewPanel, with the actor its
# `panel.created` event names).
CREATE_SQL = (
    "select * from create_panels('{t}', '[{{\"userId\": \"{sub}\", \"owner\": \"{email}\", "
    "\"name\": \"Bench panel\", \"description\": \"Created by the load benchmark\", "
    "\"cohortRule\": {{\"conditions\": [], \"logic\": \"AND\"}}, \"metadata\": {{\"source\": \"bench\"}}, "
    "\"actor\": {{\"type\": \"user\", \"id\": \"{sub}\", \"email\": \"{email}\"}}}}]');\n"
)


def read_panel_script(tmp: Path, reader: Tenant) -> Path:
    """A pgbench script of PANEL_SQL over the reader's 20 panels."""
    path = tmp / "get_panel.sql"
    path.write_text(
        f"\\set id random({reader.panel_ids()[0]}, {reader.panel_ids()[-1]})\n"
        + PANEL_SQL.format(t=reader.slug, email=reader.email, sub=reader.sub)
    )
    return path


def create_panel_script(tmp: Path, creator: Tenant) -> Path:
    """A pgbench script of CREATE_SQL as the creator."""
    path = tmp / "create_panel.sql"
    path.write_text(CREATE_SQL.format(t=creator.slug, email=creator.email, sub=creator.sub))
    return path


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
    q = percentile(lat)
    shutil.rmtree(logdir, ignore_errors=True)
    return Outcome(requests=count, rps=tps, p50=q(0.5), p95=q(0.95), p99=q(0.99), p999=q(0.999),
                   errors=int(failed.group(1)) if failed else 0, usage=m.usage)
