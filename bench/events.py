#!/usr/bin/env python3
"""The live-events benchmark (scripts/bench-events; bench/README.md "Live events"). Standard
library only: asyncio clients that speak HTTP/1.1, Server-Sent Events and WebSocket themselves,
so 10,000 connections cost the driver little.

Phases, each against fresh release servers on the database scripts/bench-events made:
1. idle: 10,000 SSE streams, then 10,000 WebSockets (one subscription each), on one instance:
   its resident memory before and after, per connection, against the 250 MB target;
2. latency: 1,000 subscribers on instance B, each following one panel, while writes to instance A
   make 1,000 events a second; commit to delivery (the event's `at`, its transaction's start) and
   write-response to delivery, p50/p95/p99, against the round trip of GET /health on B;
3. outage: subscribers on B, writes to A; Redis killed for 10 s, then B restarted; every
   subscriber resumes by Last-Event-ID; each one's events are compared with the event log.

Environment (set by scripts/bench-events): BENCH_SERVER_BIN, BENCH_DATABASE_URL (owner),
BENCH_APP_URL (request role), BENCH_REDIS_PORT, BENCH_REDIS_SERVER (redis-server binary),
BENCH_OUT (report path). Knobs: EVENTS_IDLE (10000), EVENTS_SUBSCRIBERS (1000), EVENTS_RATE
(1000), EVENTS_SECONDS (20), EVENTS_OUTAGE_SUBSCRIBERS (50).
"""

import asyncio
import base64
from datetime import datetime
import json
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jwt import sign  # noqa: E402

SERVER_BIN = os.environ["BENCH_SERVER_BIN"]
OWNER_URL = os.environ["BENCH_DATABASE_URL"]
APP_URL = os.environ["BENCH_APP_URL"]
REDIS_PORT = int(os.environ["BENCH_REDIS_PORT"])
REDIS_SERVER = os.environ.get("BENCH_REDIS_SERVER", "redis-server")
OUT = Path(os.environ.get("BENCH_OUT", "bench/out/events.md"))
IDLE = int(os.environ.get("EVENTS_IDLE", "10000"))
SUBSCRIBERS = int(os.environ.get("EVENTS_SUBSCRIBERS", "1000"))
RATE = int(os.environ.get("EVENTS_RATE", "1000"))
SECONDS = int(os.environ.get("EVENTS_SECONDS", "20"))
OUTAGE_SUBSCRIBERS = int(os.environ.get("EVENTS_OUTAGE_SUBSCRIBERS", "50"))
SECRET = secrets.token_hex(32)
PORT_A, PORT_B = 3411, 3412
TENANTS = 10
LOGS = OUT.parent


def say(msg: str) -> None:
    print(f"[bench-events {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Redis:
    """A throwaway redis-server the outage phase may kill."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Server:
    def __init__(self, name: str, port: int, extra: dict[str, str] | None = None):
        self.name, self.port = name, port
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "APP_ENV": "production",
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": OWNER_URL,
            "DATABASE_APP_URL": APP_URL,
            "DATABASE_MAX_CONNECTIONS": "10",
            "JWT_SECRET": SECRET,
            "ENCRYPTION_KEY": secrets.token_hex(32),
            "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}",
            "RATE_LIMIT_TENANT_RPS": "1000000",
            "RATE_LIMIT_TENANT_BURST": "10000000",
            "EVENT_MAX_STREAMS_PER_TENANT": "100000",
            "WORKER_CONCURRENCY": "1",
            **(extra or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(LOGS / f"events-server-{self.name}.log", "ab")
        self.proc = subprocess.Popen([SERVER_BIN, "serve"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        sys.exit(f"bench-events: server {self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid


# --- HTTP/1.1, by hand -------------------------------------------------------------------------

async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding") == "chunked":
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
    return await reader.readexactly(int(headers.get("content-length", "0")))


class Client:
    """One keep-alive connection for requests."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n")
        self.writer.write(head.encode() + data)
        try:
            status, headers = await read_head(self.reader)
            raw = await read_body(self.reader, headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.writer = None
            raise
        return status, (json.loads(raw) if raw else {})


class SseStream:
    """One SSE subscriber: records each event it gets, reconnects with Last-Event-ID."""

    def __init__(self, port: int, token: str, query: str):
        self.port, self.token, self.query = port, token, query
        self.events: list[tuple[str, dict, float]] = []
        self.last_id: str | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> asyncio.StreamReader:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        last = f"last-event-id: {self.last_id}\r\n" if self.last_id else ""
        self.writer.write((f"GET /api/events{self.query} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                           f"authorization: Bearer {self.token}\r\naccept: text/event-stream\r\n{last}\r\n").encode())
        status, headers = await read_head(reader)
        if status != 200:
            raise ConnectionError(f"status {status}")
        self.connected.set()
        return reader

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader = await self.open()
                await self.read(reader, stop)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                pass
            if stop.is_set():
                break
            self.reconnects += 1
            await asyncio.sleep(0.5)

    async def read(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        pending = b""
        while not stop.is_set():
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                return
            pending += await reader.readexactly(size)
            await reader.readline()
            while b"\n\n" in pending:
                block, pending = pending.split(b"\n\n", 1)
                fields: dict[str, str] = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        continue
                    k, _, v = line.partition(":")
                    fields[k] = fields.get(k, "") + v.removeprefix(" ")
                if "data" in fields and fields.get("event") not in (None, "reset"):
                    self.events.append((fields.get("id", ""), json.loads(fields["data"]), time.time()))
                if "id" in fields:
                    self.last_id = fields["id"]

    def close(self) -> None:
        if self.writer:
            self.writer.close()


async def open_ws(port: int, token: str, panel: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    writer.write((f"GET /api/ws HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
                  f"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\n"
                  f"sec-websocket-version: 13\r\n\r\n").encode())
    status, _ = await read_head(reader)
    if status != 101:
        raise ConnectionError(f"status {status}")
    ws_send(writer, 0x1, json.dumps({"type": "subscribe", "panelId": panel}).encode())
    return reader, writer


def ws_send(writer: asyncio.StreamWriter, opcode: int, payload: bytes) -> None:
    mask = secrets.token_bytes(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


async def ws_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """Answers pings until `stop`."""
    try:
        while not stop.is_set():
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(n)
            if b0 & 0x0F == 0x9:
                ws_send(writer, 0xA, payload)
            elif b0 & 0x0F == 0x8:
                return
    except (OSError, asyncio.IncompleteReadError):
        return


# --- set-up --------------------------------------------------------------------------------------

def tokens() -> list[str]:
    return [sign(SECRET, f"evt{t}", f"admin@evt{t}.example", "admin", f"admin-{t}") for t in range(TENANTS)]


async def make_panels(port: int, toks: list[str], per_tenant: int) -> list[list[int]]:
    out = []
    for tok in toks:
        client = Client(port)
        ids = []
        for i in range(per_tenant):
            status, body = await client.request("POST", "/api/panels", tok, {"name": f"Panel {i}"})
            assert status == 201, (status, body)
            ids.append(body["id"])
        out.append(ids)
    return out


async def gather_limited(coros, limit: int = 200):
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            return await c
    return await asyncio.gather(*(run(c) for c in coros), return_exceptions=True)


# --- phases --------------------------------------------------------------------------------------

async def idle_phase(report: list[str], panels: list[list[int]], toks: list[str]) -> None:
    for kind in ("SSE", "WebSocket"):
        server = Server("idle", PORT_B)
        server.start()
        await asyncio.sleep(2)
        before = rss_mb(server.pid)
        stop = asyncio.Event()
        holders = []
        start = time.monotonic()
        if kind == "SSE":
            streams = [SseStream(PORT_B, toks[i % TENANTS], f"?panelId={panels[i % TENANTS][i % len(panels[0])]}")
                       for i in range(IDLE)]
            results = await gather_limited([s.open() for s in streams])
            for s, r in zip(streams, results):
                if not isinstance(r, BaseException):
                    holders.append(asyncio.create_task(s.read(r, stop)))
            opened = sum(1 for r in results if not isinstance(r, BaseException))
            errors = [r for r in results if isinstance(r, BaseException)]
        else:
            results = await gather_limited([open_ws(PORT_B, toks[i % TENANTS], panels[i % TENANTS][i % len(panels[0])])
                                            for i in range(IDLE)])
            for r in results:
                if not isinstance(r, BaseException):
                    holders.append(asyncio.create_task(ws_idle(r[0], r[1], stop)))
            opened = sum(1 for r in results if not isinstance(r, BaseException))
            errors = [r for r in results if isinstance(r, BaseException)]
        took = time.monotonic() - start
        await asyncio.sleep(20)  # heartbeats and pings pass; memory settles
        after = rss_mb(server.pid)
        say(f"idle {kind}: {opened}/{IDLE} open in {took:.1f} s; RSS {before:.1f} -> {after:.1f} MB"
            + (f"; first error: {errors[0]!r}" if errors else ""))
        per = (after - before) * 1024 / max(opened, 1)
        report.append(f"| {kind} | {opened:,} of {IDLE:,} | {before:.1f} MB | {after:.1f} MB | {per:.1f} KB | "
                      f"{after / before:.1f}× | {'met' if after < 250 and opened == IDLE else 'NOT met'} |")
        stop.set()
        for s in (streams if kind == "SSE" else []):
            s.close()
        for h in holders:
            h.cancel()
        if kind != "SSE":
            for r in results:
                if not isinstance(r, BaseException):
                    r[1].close()
        server.stop()


async def latency_phase(report: list[str], panels: list[list[int]], toks: list[str]) -> None:
    a, b = Server("a", PORT_A), Server("b", PORT_B)
    a.start()
    b.start()
    per_tenant = SUBSCRIBERS // TENANTS
    streams = []
    for t in range(TENANTS):
        for i in range(per_tenant):
            streams.append(SseStream(PORT_B, toks[t], f"?panelId={panels[t][i]}&types=panel.updated"))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.follow(stop)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 120)
    # The reference: the round trip of GET /health on B, under the same load.
    health_rtts: list[float] = []
    # Per panel, when each successful write was answered (a panel is written about once a second,
    # never by two writers at once, so its events arrive in the order of its writes).
    answered_at: dict[int, list[float]] = {}
    failures = 0
    done = 0

    async def writer(w: int, n_writers: int) -> None:
        nonlocal failures, done
        client = Client(PORT_A)
        interval = n_writers / RATE
        next_at = time.monotonic()
        k = w
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            t, i = k % TENANTS, (k // TENANTS) % per_tenant
            k += n_writers
            try:
                status, _ = await client.request("PUT", f"/api/panels/{panels[t][i]}", toks[t], {"name": f"n{k}"})
                if status == 200:
                    answered_at.setdefault(panels[t][i], []).append(time.time())
                    done += 1
                else:
                    failures += 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                failures += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def health() -> None:
        client = Client(PORT_B)
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await client.request("GET", "/health", toks[0])
            health_rtts.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)

    n_writers = 32
    started = time.monotonic()
    await asyncio.gather(*(writer(w, n_writers) for w in range(n_writers)), health())
    elapsed = time.monotonic() - started
    await asyncio.sleep(3)
    stop.set()
    for s in streams:
        s.close()
    for t in tasks:
        t.cancel()
    from_commit, from_answer, delivered = [], [], 0
    for s in streams:
        for n, (_, event, received) in enumerate(s.events):
            delivered += 1
            # `at` is the writing transaction's start: commit to delivery, slightly over-stated.
            from_commit.append((received - datetime.fromisoformat(event["at"]).timestamp()) * 1000)
            answers = answered_at.get(event["panelId"], [])
            if n < len(answers):
                from_answer.append((received - answers[n]) * 1000)
    rate = done / elapsed
    say(f"latency: {done} writes ({rate:.0f}/s, {failures} failed), {delivered} deliveries; "
        f"p95 from commit {pct(from_commit, 95):.1f} ms")
    h95 = pct(health_rtts, 95)
    report.append(f"| writes answered | {done:,} in {elapsed:.1f} s ({rate:,.0f}/s), {failures} failed | |")
    report.append(f"| events delivered | {delivered:,} ({delivered / max(done, 1):.3f} per write) | |")
    for name, values in (("commit → delivery", from_commit), ("write answered → delivery", from_answer)):
        report.append(f"| {name} p50 / p95 / p99 | {pct(values, 50):.1f} / {pct(values, 95):.1f} / {pct(values, 99):.1f} ms "
                      f"| p95 {pct(values, 95) / h95:.1f}× |")
    report.append(f"| reference: GET /health on B, p50 / p95 | {pct(health_rtts, 50):.1f} / {h95:.1f} ms | 1.0× |")
    report.append(f"| target: p95 < 50 ms at {RATE:,}/s over {SUBSCRIBERS:,} subscribers | "
                  f"{'met' if pct(from_commit, 95) < 50 and rate >= 0.9 * RATE else 'NOT met'} | |")
    a.stop()
    b.stop()


def event_log(tenant: str) -> list[str]:
    out = subprocess.run(["psql", OWNER_URL, "-XAtc",
                          f"select txid::text || '-' || seq from event where tenant_id = '{tenant}' "
                          f"and type = 'panel.updated' order by txid, seq"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


async def outage_phase(report: list[str], panels: list[list[int]], toks: list[str], redis: Redis) -> None:
    a, b = Server("a", PORT_A), Server("b", PORT_B)
    a.start()
    b.start()
    before = set(event_log("evt0"))
    streams = [SseStream(PORT_B, toks[0], "?types=panel.updated") for _ in range(OUTAGE_SUBSCRIBERS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.follow(stop)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 60)
    failures, done = 0, 0
    timeline = []

    async def writes(seconds: float) -> None:
        nonlocal failures, done
        client = Client(PORT_A)
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end:
            k += 1
            try:
                status, _ = await client.request("PUT", f"/api/panels/{panels[0][k % len(panels[0])]}", toks[0], {"name": f"o{k}"})
                done += status == 200
                failures += status != 200
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                failures += 1
            await asyncio.sleep(0.01)

    async def faults() -> None:
        await asyncio.sleep(5)
        redis.kill()
        timeline.append("Redis killed at 5 s")
        await asyncio.sleep(10)
        redis.start()
        timeline.append("Redis back at 15 s")
        await asyncio.sleep(5)
        b.stop()
        timeline.append("instance B stopped at 20 s (SIGTERM), started again")
        await asyncio.get_running_loop().run_in_executor(None, b.start)

    await asyncio.gather(writes(35), faults())
    await asyncio.sleep(5)
    stop.set()
    for s in streams:
        s.close()
    for t in tasks:
        t.cancel()
    expected = [e for e in event_log("evt0") if e not in before]
    exact = sum(1 for s in streams if [i for i, _, _ in s.events] == expected)
    reconnects = sum(s.reconnects for s in streams)
    say(f"outage: {done} writes ({failures} failed); {len(expected)} events; {exact}/{len(streams)} subscribers exact")
    report.append(f"| writes to A | {done:,} answered 200, {failures} failed |")
    report.append(f"| events in the log | {len(expected):,} |")
    report.append(f"| subscribers with every event exactly once, in commit order | {exact} of {len(streams)} |")
    report.append(f"| reconnects (all subscribers) | {reconnects} |")
    report.append(f"| timeline | {'; '.join(timeline)} |")
    a.stop()
    b.stop()


async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redis = Redis()
    redis.start()
    toks = tokens()
    setup = Server("setup", PORT_A)
    setup.start()
    per_tenant = max(SUBSCRIBERS // TENANTS, 10)
    say(f"creating {per_tenant} panels in each of {TENANTS} tenants")
    panels = await make_panels(PORT_A, toks, per_tenant)
    setup.stop()
    report = [f"# Live events benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
              f"Command: `scripts/bench-events` (EVENTS_IDLE={IDLE}, EVENTS_SUBSCRIBERS={SUBSCRIBERS}, "
              f"EVENTS_RATE={RATE}, EVENTS_SECONDS={SECONDS}); {os.cpu_count()} cores; release build; "
              "driver and servers on one machine.", "",
              "## Idle connections on one instance", "",
              "| kind | open | RSS before | RSS after | per connection | after ÷ before | < 250 MB |",
              "|---|---:|---:|---:|---:|---:|---|"]
    try:
        await idle_phase(report, panels, toks)
        report += ["", "## Commit to delivery on a second instance", "",
                   "| measure | value | ÷ reference |", "|---|---|---:|"]
        await latency_phase(report, panels, toks)
        report += ["", "## Redis down 10 s, then instance B restarted, during writes", "",
                   "| measure | value |", "|---|---|"]
        await outage_phase(report, panels, toks, redis)
    finally:
        redis.kill()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(report) + "\n")
    say(f"report: {OUT}")
    print("\n".join(report))


if __name__ == "__main__":
    asyncio.run(main())
