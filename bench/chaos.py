"""`make chaos`: clients retrying writes while SecantusDB and Redis stop, stall and restart.

Two service instances (`python -m service`, production configuration, one Redis cache
shared through its generation tokens) take mixed writes and reads from several clients.
Each client owns its users, sends every write with its own Idempotency-Key and repeats it
on a 503 or a dropped connection until it is answered, and reads each write back from the
other instance. Meanwhile the database is stopped and restarted, stalled (`blockConnection`
fail points), Redis is stopped and restarted, and both go down at once.

Afterwards it checks what a client was promised: every acknowledged write is stored and
shown; no key made two orders; no read after an acknowledgement showed the old state; only
2xx, or 503 with Retry-After while a server was down, never a 409 or a 5xx; every key got
its answer once the servers were back. tests/test_faults.py runs one short cycle of it.

`--sentinel`: the cache is a primary, its replica and three sentinels (REDIS_URL
redis+sentinel://), and the faults are a forced `SENTINEL FAILOVER`, then SIGKILL of the
new primary (restarted as a replica once the sentinels have named another). It also counts
failed reads (none allowed: the cache fails open), refused writes (503: stored, but no
replica confirmed the invalidation), and the time from each fault to the sentinels naming
the new primary, to that primary having a replica in sync, and to the first cache hit served
after it was named. tests/test_sentinel.py runs a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
from pymongo import MongoClient

from bench.harness import ROOT, TOKEN, machine, publish
from tests.helpers.sentinel import SentinelGroup
from tests.helpers.servers import MongoServer, RedisServer, free_port, wait_for_port

DATABASE = "chaos"
ORDERS_PER_USER = 60  # below the aggregate's 100 newest, so every order can be checked there
RETRY_PAUSE = 0.2  # seconds between a client's repeats of one request
GIVE_UP_SECONDS = 10.0  # a key still unanswered this long after the servers are back fails
# After a server returns, 503s may go on for a driver heartbeat, a request deadline and
# the stalled commands still draining: this long, then every answer must be 2xx.
GRACE_SECONDS = 6.0
STALL_MS = 2000  # past the socket timeout (1.5 s): stalled attempts are given up and land late
# Stalled commands: reads, inserts and version bumps. PATCH (findAndModify) is left out on
# purpose: an abandoned PATCH that lands after a later acknowledged one would be a lost
# update that no idempotency scheme can prevent (only If-Match can), not a cache fault.
STALLED_COMMANDS = ["find", "insert", "update"]


@dataclass
class Window:
    """A fault, from when it began to when its server was back (loop-clock seconds)."""

    kind: str
    start: float
    end: float | None = None
    recovered_after: float | None = None  # from `end` to the first 2xx write sent after it


@dataclass
class Report:
    seconds: float
    clients: int
    driver: str = "motor"
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    lost: int = 0
    duplicates: int = 0
    stale_reads: int = 0
    bad_statuses: int = 0  # 5xx but a 503 in a fault window, 409, 503 without Retry-After
    late_503s: int = 0  # 503s while every server had been back for GRACE_SECONDS
    stuck_keys: int = 0  # keys answered 409 at least once
    unanswered_keys: int = 0
    sentinel: bool = False
    failed_reads: int = 0  # GETs answered neither 200 nor 404, or not at all
    refused_writes: int = 0  # writes answered 503 (then repeated)
    # Seconds from each Sentinel fault, by kind: to the sentinels naming a new primary, to
    # that primary having a replica in sync, to the first hit.
    primary_named: dict[str, list[float]] = field(default_factory=dict)
    replica_synced: dict[str, list[float]] = field(default_factory=dict)
    hits_resumed: dict[str, list[float]] = field(default_factory=dict)
    hits_never_resumed: int = 0
    keys: int = 0
    stored_orders: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    unrecovered: int = 0
    problems: list[str] = field(default_factory=list)
    server_log: Counter[str] = field(default_factory=Counter)  # warnings and errors, by kind
    server_errors: list[str] = field(default_factory=list)  # tracebacks of unhandled errors

    def problem(self, text: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(text)

    def failures(self) -> list[str]:
        """Every broken promise, one line each (empty when the run passed)."""
        checks = {
            "acknowledged writes missing from the database or the aggregate": self.lost,
            "orders beyond one per key": self.duplicates,
            "reads showing the state before an acknowledged write": self.stale_reads,
            "answers other than 2xx or 503 + Retry-After": self.bad_statuses,
            "503s after every server was back": self.late_503s,
            "keys answered 409": self.stuck_keys,
            "keys never answered": self.unanswered_keys,
            "server returns with no 2xx write after them": self.unrecovered,
        }
        if self.sentinel:
            checks["failed reads"] = self.failed_reads
            checks["Sentinel faults after which no hit was served"] = self.hits_never_resumed
        failed = [f"{name}: {count}" for name, count in checks.items() if count]
        if self.acknowledged == 0:
            failed.append("no write was acknowledged")
        return failed + (self.problems if failed else [])


@dataclass
class Answer:
    status: int | None  # None: the connection dropped or timed out
    body: Any
    retry_after: bool
    sent: float
    repeated: bool = False  # the answer to a repeat (an earlier attempt got none)


class Run:
    """The shared state of one run: servers, instances, fault windows and the report."""

    def __init__(self, mongo: MongoServer, redis: RedisServer, urls: list[str], report: Report):
        self.mongo, self.redis, self.urls, self.report = mongo, redis, urls, report
        self.group: SentinelGroup | None = None  # --sentinel: the cache's nodes
        self.metrics_urls: list[str] = []
        self.windows: list[Window] = []
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.started = self.now()

    def now(self) -> float:
        return self.loop.time()

    def during(self) -> str:
        """The faults open (or in their grace period) now, for the problem lines."""
        now = self.now()
        open_ = [w.kind for w in self.windows if now <= (w.end or now) + GRACE_SECONDS]
        return ", ".join(open_) or "no fault"

    def quiet_since(self) -> float | None:
        """Since when every server has been back (grace included); None while one is not."""
        if any(w.end is None for w in self.windows):
            return None
        return max((w.end + GRACE_SECONDS for w in self.windows if w.end), default=self.started)

    def in_fault(self, moment: float) -> bool:
        return any(
            w.start <= moment and (w.end is None or moment <= w.end + GRACE_SECONDS)
            for w in self.windows
            if w.kind != "redis-stop"  # a cache outage must cost no request a 503
        )

    def wrote(self, sent: float, done: float) -> None:
        """A 2xx write sent at `sent`: the recovery of every server return before it."""
        for window in self.windows:
            if window.end is not None and window.recovered_after is None and sent >= window.end:
                window.recovered_after = done - window.end


class Client:
    """One client: its own users, writes repeated under their key until answered."""

    def __init__(self, run: Run, number: int, session: aiohttp.ClientSession, seed: int):
        self.run, self.number, self.session = run, number, session
        self.random = random.Random(seed * 1000 + number)
        self.keys = 0
        self.user: str | None = None
        self.name: str | None = ""  # None: the last rename's outcome is unknown
        self.orders: dict[str, set[str]] = {}  # user -> acknowledged order ids
        self.sent_keys: dict[str, set[str]] = {}  # user -> every order key sent

    def key(self) -> str:
        self.keys += 1
        return f"c{self.number}-k{self.keys}"

    def url(self, path: str, other: bool = False) -> str:
        index = (self.keys + (1 if other else 0)) % len(self.run.urls)
        return f"{self.run.urls[index]}{path}"

    async def send(self, method: str, path: str, body: Any = None, **headers: str) -> Answer:
        report, run = self.run.report, self.run
        sent = run.now()
        headers = {"Authorization": f"Bearer {TOKEN}", **headers}
        report.requests += 1
        try:
            async with self.session.request(
                method, self.url(path, other=method == "GET"), json=body, headers=headers
            ) as response:
                data = None
                if response.content_length:
                    with contextlib.suppress(aiohttp.ContentTypeError, ValueError):
                        data = await response.json()
                status, retry_after = response.status, "Retry-After" in response.headers
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
            report.statuses["dropped"] += 1
            report.failed_reads += method == "GET"
            return Answer(None, None, False, sent)
        except TimeoutError:
            report.statuses["timeout"] += 1
            report.failed_reads += method == "GET"
            report.bad_statuses += 1
            report.problem(f"{method} {path}: no answer within the client timeout")
            return Answer(None, None, False, sent)
        report.statuses[str(status)] += 1
        if method == "GET" and status not in (200, 404):
            report.failed_reads += 1
        elif status == 503:
            report.refused_writes += 1
        if status == 503:
            if not retry_after:
                report.bad_statuses += 1
                report.problem(f"{method} {path}: 503 without Retry-After")
            elif not (run.in_fault(sent) or run.in_fault(run.now())):
                report.late_503s += 1
                report.problem(f"{method} {path}: 503 at {sent - run.started:.1f} s")
        elif status >= 500 or status == 409:
            report.bad_statuses += 1
            report.problem(f"{method} {path}: {status} {data}")
        return Answer(status, data, retry_after, sent)

    async def until_answered(
        self, method: str, path: str, body: Any, key: str | None = None
    ) -> Answer | None:
        """Repeat a write (with its key) on 503 or a drop; None when never answered."""
        headers = {} if key is None else {"Idempotency-Key": key}
        started = self.run.now()
        stuck, tries = False, 0
        while True:
            answer = await self.send(method, path, body, **headers)
            tries += 1
            if answer.status == 409 and not stuck:
                stuck = True
                self.run.report.stuck_keys += 1
            if answer.status is not None and answer.status not in (409, 503):
                if 200 <= answer.status < 300:
                    self.run.wrote(answer.sent, self.run.now())
                answer.repeated = tries > 1
                return answer
            quiet = self.run.quiet_since()
            if quiet is not None and self.run.now() - max(quiet, started) > GIVE_UP_SECONDS:
                self.run.report.unanswered_keys += 1
                self.run.report.problem(f"{method} {path} key {key}: never answered")
                return None
            await asyncio.sleep(RETRY_PAUSE)

    async def new_user(self) -> None:
        key = self.key()
        email = f"c{self.number}-{key}@chaos.example"
        answer = await self.until_answered("POST", "/users", {"name": "n0", "email": email}, key)
        if answer is None or answer.status != 201:
            self.user = None
            return
        self.run.report.acknowledged += 1
        self.user, self.name = answer.body["id"], "n0"
        self.orders[self.user], self.sent_keys[self.user] = set(), set()

    async def place_order(self) -> None:
        assert self.user is not None
        key = self.key()
        self.sent_keys[self.user].add(key)
        body = {"amount": self.random.randint(1, 999)}
        answer = await self.until_answered("POST", f"/users/{self.user}/orders", body, key)
        if answer is not None and answer.status == 201:
            self.run.report.acknowledged += 1
            self.orders[self.user].add(answer.body["id"])
        elif answer is not None:
            self.run.report.bad_statuses += 1
            self.run.report.problem(f"order for {self.user}: {answer.status} {answer.body}")

    async def rename(self) -> None:
        assert self.user is not None
        name = f"n{self.keys}"
        self.key()
        answer = await self.until_answered("PATCH", f"/users/{self.user}", {"name": name})
        if answer is not None and answer.status == 200:
            self.run.report.acknowledged += 1
            self.name = name
        else:  # counted already; whether it was applied is unknown until the next rename
            self.name = None

    async def create_and_delete(self) -> None:
        key = self.key()
        email = f"c{self.number}-{key}-gone@chaos.example"
        made = await self.until_answered("POST", "/users", {"name": "tmp", "email": email}, key)
        if made is None or made.status != 201:
            return
        self.run.report.acknowledged += 1
        path = f"/users/{made.body['id']}"
        gone = await self.until_answered("DELETE", path, None)
        # 404 on a repeat: the attempt whose answer was lost deleted it.
        if gone is not None and (gone.status == 204 or (gone.status == 404 and gone.repeated)):
            self.run.report.acknowledged += 1
            read = await self.send("GET", path)
            if read.status == 200:
                self.run.report.stale_reads += 1
                self.run.report.problem(f"GET {path} after its DELETE: 200")

    async def check_read(self) -> None:
        """The user as this client last wrote it, from the instance that did not write it."""
        assert self.user is not None
        read = await self.send("GET", f"/users/{self.user}")
        if read.status != 200:
            if read.status == 404:
                self.run.report.stale_reads += 1
                self.run.report.problem(f"GET own user {self.user}: {read.status}")
            return
        shown = {order["id"] for order in read.body["orders"]}
        missing = self.orders[self.user] - shown
        if self.name not in (None, read.body["user"]["name"]) or missing:
            self.run.report.stale_reads += 1
            self.run.report.problem(
                f"GET {self.user} at {read.sent - self.run.started:.1f} s ({self.run.during()}): "
                f"name {read.body['user']['name']!r} (wrote {self.name!r}), "
                f"{len(missing)} acknowledged orders missing"
            )

    async def work(self) -> None:
        while not self.run.stopping.is_set():
            if self.user is None or len(self.sent_keys[self.user]) >= ORDERS_PER_USER:
                await self.new_user()
                continue
            roll = self.random.random()
            if roll < 0.45:
                await self.place_order()
            elif roll < 0.6:
                await self.rename()
            elif roll < 0.65:
                await self.create_and_delete()
            await self.check_read()


def _instance_env(
    mongo: MongoServer, redis_url: str, port: int, metrics_port: int, driver: str
) -> dict[str, str]:
    """Production configuration on the local servers, as an operator would run it."""
    return {
        **os.environ,
        "SERVICE_ENV": "production",
        "MONGO_DRIVER": driver,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "MONGO_URL": mongo.url,
        "MONGO_DB": DATABASE,
        "REDIS_URL": redis_url,
        "CACHE_BACKEND": "redis",
        "API_TOKENS": TOKEN,
        "CURSOR_SECRET": "chaos-cursor-secret-0123456789abcdef",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }


@contextlib.contextmanager
def _instances(
    run_dir: Path, mongo: MongoServer, redis_url: str, driver: str
) -> Iterator[tuple[list[str], list[str]]]:
    """Two instances: their API URLs and their /metrics URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls, metrics_urls = [], []
    try:
        for number in range(2):
            port, metrics_port = free_port(), free_port()
            with (run_dir / f"instance-{number}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "service"],
                        cwd=ROOT,
                        env=_instance_env(mongo, redis_url, port, metrics_port, driver),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            wait_for_port(port, timeout=60, process=processes[-1])
            urls.append(f"http://127.0.0.1:{port}")
            metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
        yield urls, metrics_urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _ready(urls: list[str], session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 60
    for url in urls:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/health/ready") as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within 60 s")
            await asyncio.sleep(0.2)


def _fail_point(control: MongoClient[dict[str, Any]], on: bool) -> None:
    command: dict[str, Any] = {"configureFailPoint": "failCommand", "mode": "off"}
    if on:
        command["mode"] = "alwaysOn"
        command["data"] = {
            "failCommands": STALLED_COMMANDS,
            "blockConnection": True,
            "blockTimeMS": STALL_MS,
            "appName": "user-service",
        }
    control.admin.command(command)


@contextlib.asynccontextmanager
async def _fault(run: Run, kind: str) -> AsyncIterator[Window]:
    window = Window(kind, run.now())
    run.windows.append(window)
    run.report.faults[kind] += 1
    try:
        yield window
    finally:
        window.end = run.now()


async def _cycle(run: Run, rng: random.Random, calm: float) -> None:
    """One of each fault, with calm between them so recovery is visible."""
    down = 1.5 + rng.random()
    async with _fault(run, "mongo-stop"):
        await asyncio.to_thread(run.mongo.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(run.mongo.start)
    await asyncio.sleep(calm)
    control: MongoClient[dict[str, Any]] = MongoClient(run.mongo.url, appname="chaos-control")
    try:
        async with _fault(run, "mongo-stall"):
            await asyncio.to_thread(_fail_point, control, True)
            await asyncio.sleep(1.0 + rng.random() * 2)
            await asyncio.to_thread(_fail_point, control, False)
            await asyncio.sleep(STALL_MS / 1000)  # what was stalled is still landing
    finally:
        control.close()
    await asyncio.sleep(calm)
    async with _fault(run, "redis-stop"):
        await asyncio.to_thread(run.redis.stop)
        await asyncio.sleep(1.5 + rng.random())
        await asyncio.to_thread(run.redis.start)
    await asyncio.sleep(calm)
    async with _fault(run, "both-stop"):
        await asyncio.to_thread(run.redis.stop)
        await asyncio.to_thread(run.mongo.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(run.mongo.start)
        await asyncio.to_thread(run.redis.start)
    await asyncio.sleep(calm)


async def _hits(run: Run, session: aiohttp.ClientSession) -> int:
    """cache_hits_total over both instances."""
    total = 0
    for url in run.metrics_urls:
        async with session.get(url) as response:
            text = await response.text()
        found = re.findall(r"^cache_hits_total\{.*\} (\S+)$", text, re.MULTILINE)
        total += sum(int(float(n)) for n in found)
    return total


async def _until(check: Callable[[], Awaitable[bool]], deadline: float, run: Run) -> bool:
    """Poll `check` every 0.1 s until it holds (True) or the deadline passes (False)."""
    while True:
        if await check():
            return True
        if run.now() > deadline:
            return False
        await asyncio.sleep(0.1)


async def _sentinel_fault(
    run: Run, session: aiohttp.ClientSession, kind: str, act: Callable[[int], None]
) -> None:
    """Run `act` (a failover or a kill), then wait for the sentinels to name another primary,
    for a replica in sync, and for the first hit after that; the window ends once the
    replica is back (writes can be confirmed again)."""
    group = run.group
    assert group is not None
    before = await asyncio.to_thread(group.current_primary_port)

    async def moved() -> bool:
        return await asyncio.to_thread(group.current_primary_port) != before

    async def in_sync() -> bool:
        return await asyncio.to_thread(group.replicas_in_sync)

    async with _fault(run, kind) as window:
        deadline = run.now() + 60
        await asyncio.to_thread(act, before)
        if not await _until(moved, deadline, run):
            run.report.problem(f"{kind}: the sentinels named no other primary within 60 s")
        named_hits = await _hits(run, session)

        async def hit() -> bool:
            return await _hits(run, session) > named_hits

        run.report.primary_named.setdefault(kind, []).append(run.now() - window.start)
        if kind == "redis-kill":  # back as the new primary's replica, as Kubernetes would
            node = group.node(before)
            await asyncio.to_thread(node.start_as_replica, group.current_primary_port())

        async def synced() -> None:  # timed beside the hits: what the wait for them is made of
            if await _until(in_sync, deadline, run):
                run.report.replica_synced.setdefault(kind, []).append(run.now() - window.start)

        syncing = asyncio.create_task(synced())
        if await _until(hit, deadline, run):
            run.report.hits_resumed.setdefault(kind, []).append(run.now() - window.start)
        else:
            run.report.hits_never_resumed += 1
            run.report.problem(f"{kind}: no hit within 60 s")
        await syncing


async def _sentinel_cycle(run: Run, session: aiohttp.ClientSession, calm: float) -> None:
    """A forced failover, then SIGKILL of the primary it made."""
    group = run.group
    assert group is not None
    await _sentinel_fault(run, session, "redis-failover", lambda _port: group.force_failover())
    await asyncio.sleep(calm)
    await _sentinel_fault(run, session, "redis-kill", lambda port: group.node(port).kill())
    await asyncio.sleep(calm)


def _check_storage(run: Run, clients: list[Client]) -> None:
    """Every acknowledged order is stored, and no key stored two."""
    report = run.report
    database: MongoClient[dict[str, Any]] = MongoClient(run.mongo.url)
    try:
        orders = database[DATABASE]["orders"]
        for client in clients:
            for user, acknowledged in client.orders.items():
                stored = list(orders.find({"user_id": user}, {"_id": 1, "idempotency_key": 1}))
                report.stored_orders += len(stored)
                report.keys += len(client.sent_keys[user])
                keys = Counter(doc.get("idempotency_key") for doc in stored)
                extra = sum(n - 1 for n in keys.values() if n > 1) + keys[None]
                extra += max(0, len(stored) - len(client.sent_keys[user]))
                report.duplicates += extra
                lost = acknowledged - {doc["_id"] for doc in stored}
                report.lost += len(lost)
                if lost or extra:
                    report.problem(f"user {user}: {len(lost)} lost, {extra} extra orders")
    finally:
        database.close()


async def _check_final_reads(run: Run, clients: list[Client]) -> None:
    """Once the servers are back, both instances show every acknowledged write."""
    for client in clients:
        for user, acknowledged in client.orders.items():
            for index, url in enumerate(run.urls):
                async with client.session.get(f"{url}/users/{user}") as response:
                    body = await response.json()
                shown = {order["id"] for order in body.get("orders", [])}
                if response.status != 200 or acknowledged - shown:
                    run.report.lost += len(acknowledged - shown) or 1
                    run.report.problem(f"instance {index}, user {user}: {response.status}")


def _summarise_logs(directory: Path, report: Report) -> None:
    """The instances' warnings and errors, counted by kind (ids and figures left out)."""
    for log in sorted(directory.glob("instance-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"level": "TEXT", "logger": "", "message": line}
            if not isinstance(entry, dict) or entry.get("level") in ("INFO", "DEBUG"):
                continue
            message = re.sub(r"\d+(\.\d+)?", "N", str(entry.get("message", "")))[:100]
            if entry.get("exception"):  # what an unhandled error was
                message += " | " + str(entry["exception"]).strip().splitlines()[-1][:200]
                if len(report.server_errors) < 5:
                    report.server_errors.append(str(entry["exception"]))
            report.server_log[f"{entry.get('level')} {entry.get('logger')}: {message}"] += 1


def _print_logs(directory: Path) -> None:
    for log in sorted(directory.rglob("*.log")):
        print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")


async def run(
    seconds: float,
    clients: int = 4,
    seed: int = 1,
    calm: float = 3.0,
    work_dir: Path | None = None,
    driver: str = "motor",
    sentinel: bool = False,
) -> Report:
    """Faults in cycles for about `seconds`, then the checks; the servers are its own."""
    report = Report(seconds=seconds, clients=clients, driver=driver, sentinel=sentinel)
    with tempfile.TemporaryDirectory(prefix="user-service-chaos-", dir=work_dir) as temp:
        directory = Path(temp)
        mongo, redis = MongoServer(directory / "mongo"), RedisServer(directory / "redis")
        group = SentinelGroup(directory / "sentinel") if sentinel else None
        mongo.start()
        if group is None:
            redis.start()
        else:
            redis = group.primary
            group.start()
        try:
            redis_url = redis.url if group is None else group.url
            with _instances(directory, mongo, redis_url, driver) as (urls, metrics_urls):
                timeout = aiohttp.ClientTimeout(total=15)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    await _ready(urls, session)
                    state = Run(mongo, redis, urls, report)
                    state.group, state.metrics_urls = group, metrics_urls
                    population = [Client(state, n, session, seed) for n in range(clients)]
                    workers = [asyncio.create_task(c.work()) for c in population]
                    rng = random.Random(seed)
                    await asyncio.sleep(calm)
                    while state.now() - state.started < seconds - calm:
                        if group is None:
                            await _cycle(state, rng, calm)
                        else:
                            await _sentinel_cycle(state, session, calm)
                    state.stopping.set()
                    await asyncio.gather(*workers)
                    _check_storage(state, population)
                    await _check_final_reads(state, population)
                    for window in state.windows:
                        if window.kind == "redis-stop" or group is not None:
                            continue  # writes after a Sentinel fault: refused_writes
                        if window.recovered_after is None:
                            report.unrecovered += 1
                        else:
                            report.recoveries.append(window.recovered_after)
                    report.seconds = state.now() - state.started
            _summarise_logs(directory, report)
        except BaseException:
            _print_logs(directory)
            raise
        finally:
            if group is not None:
                group.stop()
            redis.stop()
            mongo.stop()
    return report


_BY_KIND = "median / max, forced failover; kill"
_KINDS = ("redis-failover", "redis-kill")


def _by_kind(seconds: dict[str, list[float]]) -> str:
    """`1.10 s / 1.13 s; 2.30 s / 3.50 s`: each kind's median and maximum."""
    return "; ".join(
        f"{statistics.median(v):.2f} s / {max(v):.2f} s" if (v := seconds.get(kind)) else "none"
        for kind in _KINDS
    )


def render(report: Report, details: bool = False) -> str:
    recoveries = report.recoveries or [0.0]
    faults = ", ".join(f"{kind} x{n}" for kind, n in sorted(report.faults.items()))
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(report.statuses.items()))
    verdict = "PASS" if not report.failures() else "FAIL: " + "; ".join(report.failures()[:8])
    shared = "Redis through Sentinel (a primary, a replica, three sentinels)"
    rows = [
        f"Driver: {report.driver}. Machine: {machine()}. {report.clients} clients, two service "
        f"instances sharing {shared if report.sentinel else 'Redis'}, {report.seconds:.0f} s.",
        "",
        "| Check | Result |",
        "| --- | --- |",
        f"| faults | {faults} |",
        f"| requests | {report.requests:,} ({statuses}) |",
        f"| acknowledged writes (201, 200, 204) | {report.acknowledged:,} |",
        f"| lost: acknowledged but not stored, or not shown by both instances | {report.lost} |",
        f"| order keys sent / orders stored / duplicates | {report.keys:,} / "
        f"{report.stored_orders:,} / {report.duplicates} |",
        f"| stale reads after an acknowledged write | {report.stale_reads} |",
        f"| 409s, 5xx other than 503, 503s without Retry-After, timeouts | {report.bad_statuses} |",
        f"| 503s after every server was back | {report.late_503s} |",
        f"| keys stuck in 409 / never answered | {report.stuck_keys} / {report.unanswered_keys} |",
    ]
    if report.sentinel:
        rows += [
            f"| failed reads (GET answered neither 200 nor 404) | {report.failed_reads} |",
            f"| refused writes (503, repeated until acknowledged) | {report.refused_writes:,} |",
            f"| fault to the sentinels naming a new primary: {_BY_KIND} | "
            f"{_by_kind(report.primary_named)} |",
            f"| fault to the new primary having a replica in sync: {_BY_KIND} | "
            f"{_by_kind(report.replica_synced)} |",
            f"| fault to the first hit after that: {_BY_KIND} | {_by_kind(report.hits_resumed)} |",
        ]
    else:
        rows.append(
            f"| recovery, database back to first 2xx write: median / max | "
            f"{statistics.median(recoveries):.2f} s / {max(recoveries):.2f} s |"
        )
    rows += ["", f"Verdict: {verdict}."]
    if details:
        rows += ["", "Server warnings and errors:"]
        rows += [f"  {n:5d}  {kind}" for kind, n in report.server_log.most_common(12)]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drivers", default="motor,pymongo", help="comma-separated, each in turn")
    parser.add_argument(
        "--sentinel", action="store_true", help="the cache through Sentinel, failed over and killed"
    )
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    reports = [
        asyncio.run(
            run(args.minutes * 60, args.clients, args.seed, driver=driver, sentinel=args.sentinel)
        )
        for driver in args.drivers.split(",")
    ]
    data: dict[str, Any] = {}
    for report in reports:
        fields_ = {
            f.name: getattr(report, f.name) for f in fields(report)
        }  # asdict breaks Counters
        data[report.driver] = {**fields_, "failures": report.failures()}
    text = "\n\n".join(render(report) for report in reports)
    publish("chaos-sentinel" if args.sentinel else "chaos", data, text, readme=args.update_readme)
    return 0 if not any(report.failures() for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
