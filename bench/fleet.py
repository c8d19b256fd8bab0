"""`make fleet`: three instances behind HAProxy, rolled one by one with SIGTERM under load.

One SecantusDB, one redis-server, three service instances (gunicorn, two workers each, the
production configuration: Redis cache, write tokens, metrics on their own port), the
shipped HAProxy front (config/haproxy/haproxy.cfg, its backend given three servers)
health-checking `/health/ready` every 500 ms, and a real Prometheus scraping the three
metrics ports. A pool of aiohttp clients POSTs orders (each with an Idempotency-Key)
and reads users through HAProxy while every instance in turn is taken out of rotation, sleeps
its preStop, gets SIGTERM, exits
and starts again. tests/test_fleet.py runs one rolling restart of this harness; `make
fleet` runs several and writes bench/results/fleet.json.

Afterwards it counts: requests failed (a connection error or a non-2xx that is not the
designed 404), writes acknowledged against stored, stale reads (a read sent after a write
was acknowledged that does not show it), the time each instance was out of rotation (from
HAProxy's stats page), and what Prometheus says about the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import csv
import io
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pymongo
import yaml

from bench.harness import BIN, ROOT, TOKEN, machine, publish
from tests.helpers.front import Front
from tests.helpers.metrics import PrometheusApi, PrometheusServer
from tests.helpers.sentinel import SentinelGroup
from tests.helpers.servers import MongoServer, RedisServer, free_port

KUBERNETES = ROOT / "config" / "kubernetes"
ORDER_HISTORY = 100  # GET /users/{id} lists the newest 100 orders (domain/representation.py)
API_ROUTES = ("/users", "/users/{user_id}", "/users/{user_id}/orders")
ROUTE_MATCHER = "|".join(API_ROUTES)


@dataclass(frozen=True)
class Budget:
    """The shutdown timings, read from the Kubernetes manifests: one place for both."""

    pre_stop_seconds: float  # the Deployment's preStop sleep
    graceful_timeout_seconds: float  # the ConfigMap's GRACEFUL_TIMEOUT_SECONDS


def rollout_budget() -> Budget:
    config = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    sleep, seconds = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep", container["lifecycle"]
    return Budget(
        pre_stop_seconds=float(seconds),
        graceful_timeout_seconds=float(config["GRACEFUL_TIMEOUT_SECONDS"]),
    )


# --- the processes --------------------------------------------------------------------


class Instance:
    """One service instance: a gunicorn master with two workers, restartable on its ports."""

    def __init__(self, name: str, directory: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.log = directory / f"{name}.log"
        self.env = {**env, "PORT": str(self.port), "METRICS_PORT": str(self.metrics_port)}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def wait_ready(self, http: aiohttp.ClientSession, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None, self.name
            assert self.process.poll() is None, f"{self.name} died: see {self.log}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{self.base}/health/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {within}s")

    async def terminate(self, grace: float) -> int:
        """SIGTERM by pid and wait for the exit; the exit code (killed: -9)."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(process.wait, grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9
        finally:
            self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


class HAProxy(Front):
    """The shipped front (config/haproxy/haproxy.cfg) before the instances, in the foreground,
    with a stats page whose CSV the harness polls for each server's state."""

    def __init__(self, directory: Path, servers: list[Instance]) -> None:
        self.stats_port = free_port()
        super().__init__(directory, {s.name: s.port for s in servers}, self.stats_port)

    async def set_state(self, http: aiohttp.ClientSession, server: str, state: str) -> None:
        """The stats page's admin form, as an ingress controller updates its endpoints:
        `maint` takes the server out (requests in flight finish), `ready` puts it back
        (it serves again once its health checks pass)."""
        form = {"s": server, "action": state, "b": "service"}
        url = f"http://127.0.0.1:{self.stats_port}/stats"
        async with http.post(url, data=form, allow_redirects=False) as response:
            done = response.headers.get("Location", "")
            assert response.status == 303, response.status
            assert "st=DONE" in done, done

    async def servers(self, http: aiohttp.ClientSession) -> dict[str, str]:
        """Each server's status (UP, DOWN, "UP 1/2" while going down...) from the CSV page."""
        async with http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv") as response:
            text = await response.text()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "service"
                and row["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip


@dataclass
class Rotation:
    """When HAProxy had each server out of rotation (DOWN or MAINT), polled every 50 ms."""

    out_since: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def observe(self, statuses: dict[str, str], now: float) -> None:
        for name, status in statuses.items():
            out = status.startswith(("DOWN", "MAINT", "NOLB"))
            if out and name not in self.out_since:
                self.out_since[name] = now
            elif not out and name in self.out_since:
                self.intervals[name].append((self.out_since.pop(name), now))

    def in_rotation(self, name: str) -> bool:
        return name not in self.out_since


async def watch_rotation(
    haproxy: HAProxy, http: aiohttp.ClientSession, rotation: Rotation, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            rotation.observe(await haproxy.servers(http), time.monotonic())
        await asyncio.sleep(0.05)


# --- the load -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    order_id: str
    created_at: str


@dataclass
class Tally:
    """What the clients saw: answers by (method, route, status), failures, stale reads."""

    answered: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # wall clock, for rates over windows
    acked: dict[str, list[Ack]] = field(default_factory=lambda: defaultdict(list))
    reads_checked: int = 0
    origin: float = field(default_factory=time.monotonic)  # when the load began

    def now(self) -> float:
        """Seconds since the load began: stale reads and restarts on one clock."""
        return round(time.monotonic() - self.origin, 2)

    @property
    def sent(self) -> int:
        return sum(self.answered.values()) + len(self.failures)

    @property
    def writes_acknowledged(self) -> int:
        return sum(len(acks) for acks in self.acked.values())


def stale_orders(acked: list[Ack], shown: list[dict[str, Any]]) -> list[str]:
    """Acknowledged orders a user's representation should list but does not.

    It lists the newest ORDER_HISTORY orders (created_at, then id, descending): an order
    older than all of a full history may rightly be missing.
    """
    ids = {order["id"] for order in shown}
    oldest = min(((o["created_at"], o["id"]) for o in shown), default=None)
    full = len(shown) >= ORDER_HISTORY
    return [
        ack.order_id
        for ack in acked
        if ack.order_id not in ids
        and (not full or oldest is None or (ack.created_at, ack.order_id) > oldest)
    ]


class Load:
    """Clients that each POST an order and read users back through the balancer."""

    def __init__(self, base: str, users: list[str], tally: Tally, seed: int = 19) -> None:
        self.base = base
        self.users = users
        self.tally = tally
        self.random = random.Random(seed)
        self.write_headers = {"Authorization": f"Bearer {TOKEN}"}

    async def _request(
        self, http: aiohttp.ClientSession, method: str, path: str, route: str, **kwargs: Any
    ) -> tuple[int, Any] | None:
        """One request; None after a connection error (counted as a failure)."""
        started = time.monotonic()
        try:
            async with http.request(method, f"{self.base}{path}", **kwargs) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            failure = f"{method} {path}: {type(error).__name__}: {error}"
            self.tally.failures.append(f"+{self.tally.now()}s: {failure}")
            return None
        self.tally.latencies.append(time.monotonic() - started)
        self.tally.done_at.append(time.time())
        self.tally.answered[(method, route, str(status))] += 1
        designed = status == 404 and "missing" in path
        if not (200 <= status < 300 or designed):
            self.tally.failures.append(f"+{self.tally.now()}s: {method} {path}: {status} {body}")
        return status, body

    async def create_users(self, http: aiohttp.ClientSession, count: int) -> None:
        for index in range(count):
            body = {"name": f"Fleet {index}", "email": f"fleet-{uuid.uuid4().hex[:12]}@example.com"}
            answer = await self._request(http, "POST", "/users", "/users", json=body,
                                         headers=self.write_headers)  # fmt: skip
            assert answer is not None
            assert answer[0] == 201, answer
            self.users.append(answer[1]["id"])

    async def probe_trace(self, http: aiohttp.ClientSession) -> str:
        """One read through the front with a sampled W3C traceparent (counted like any
        other), whose span should reach the collector below the caller's (test_fleet)."""
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        answer = await self._request(http, "GET", f"/users/{self.users[0]}", "/users/{user_id}",
                                     headers={"traceparent": traceparent})  # fmt: skip
        assert answer is not None
        assert answer[0] == 200, answer
        return traceparent

    async def order(self, http: aiohttp.ClientSession, user: str) -> None:
        """POST an order with its own key, retrying the same key if no answer came back."""
        headers = {**self.write_headers, "Idempotency-Key": uuid.uuid4().hex}
        body = {"amount": self.random.randrange(100, 50_000), "currency": "EUR"}
        for _ in range(5):
            path = f"/users/{user}/orders"
            route = "/users/{user_id}/orders"
            answer = await self._request(http, "POST", path, route, json=body, headers=headers)
            if answer is not None and answer[0] == 201:
                order = answer[1]
                self.tally.acked[user].append(Ack(order["id"], order["created_at"]))
                return
            if answer is not None and answer[0] not in (409, 503):
                return  # final; counted as a failure already
            # No answer, 503 or 409 (an attempt still running): the same key again, so the
            # order is placed once whatever happened to the attempt that got no 201.
            await asyncio.sleep(0.2)

    async def read(self, http: aiohttp.ClientSession, user: str) -> None:
        acked = list(self.tally.acked[user])  # acknowledged before this read was sent
        answer = await self._request(http, "GET", f"/users/{user}", "/users/{user_id}")
        if answer is None or answer[0] != 200:
            return
        self.tally.reads_checked += 1
        missing = stale_orders(acked, answer[1]["orders"])
        if missing:
            at = self.tally.now()
            self.tally.stale.append(f"+{at}s: GET /users/{user} lacks acknowledged {missing}")

    async def client(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            user = self.random.choice(self.users)
            await self.order(http, user)
            await self.read(http, user)  # the order just acknowledged, through any instance
            await self.read(http, self.random.choice(self.users))
            if self.random.random() < 0.05:
                await self._request(http, "GET", f"/users/missing{self.random.randrange(99)}",
                                    "/users/{user_id}")  # fmt: skip

    async def run(self, clients: int, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await asyncio.gather(*(self.client(http, stop) for _ in range(clients)))


# --- the run --------------------------------------------------------------------------


@dataclass
class Restart:
    instance: str
    at_seconds: float  # termination began, in seconds since the load began
    exit_code: int
    out_after_seconds: float  # termination began -> HAProxy has it out of rotation
    exited_after_seconds: float  # termination began (preStop, SIGTERM) -> the master exited
    ready_after_seconds: float  # started again -> /health/ready 200
    back_after_seconds: float  # started again -> HAProxy has it back in rotation
    started_at: float  # wall clock of the new start: where its counters begin again


@dataclass
class Report:
    tally: Tally
    restarts: list[Restart]
    out_of_rotation: dict[str, list[float]]
    stored_orders: int
    stored_matches_acknowledged: bool
    duration_seconds: float
    prometheus: dict[str, Any]

    def figures(self) -> dict[str, Any]:
        latencies = sorted(self.tally.latencies)
        return {
            "requests_sent": self.tally.sent,
            "failed": len(self.tally.failures),
            "failures_sample": self.tally.failures[:10],
            "writes_acknowledged": self.tally.writes_acknowledged,
            "orders_stored": self.stored_orders,
            "stored_matches_acknowledged": self.stored_matches_acknowledged,
            "reads_checked": self.tally.reads_checked,
            "stale_reads": len(self.tally.stale),
            "stale_sample": self.tally.stale[:10],
            "load_seconds": round(self.duration_seconds, 1),
            "client_rps": round(self.tally.sent / self.duration_seconds, 1),
            "client_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
            "restarts": [vars(restart) for restart in self.restarts],
            "out_of_rotation_seconds": self.out_of_rotation,
            "prometheus": self.prometheus,
        }


class Fleet:
    """Three instances, HAProxy and Prometheus on `mongo_url` and `redis_url`."""

    def __init__(
        self,
        directory: Path,
        mongo_url: str,
        redis_url: str,
        budget: Budget,
        haproxy: str,
        otlp_endpoint: str | None = None,
    ) -> None:
        self.directory = directory
        self.budget = budget
        self.haproxy_binary = haproxy
        self.database = f"fleet_{uuid.uuid4().hex[:8]}"
        self.mongo_url = mongo_url
        env = {
            **os.environ,
            "SERVICE_ENV": "production",
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "MONGO_URL": mongo_url,
            "MONGO_DB": self.database,
            "CACHE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "CACHE_NAMESPACE": self.database,
            "API_TOKENS": TOKEN,
            # One secret for the fleet: a page from one instance is followed on another.
            "CURSOR_SECRET": "the-fleet-cursor-secret-0123456789",
            "GRACEFUL_TIMEOUT_SECONDS": str(budget.graceful_timeout_seconds),
            "LOG_LEVEL": "WARNING",
            # This measures restarts, not speed: on a small machine shared by the clients,
            # HAProxy, Prometheus and SecantusDB, a request can wait past the 2 s deadline
            # for CPU alone, and its 503 would say nothing about the roll.
            "REQUEST_DEADLINE_SECONDS": "10",
        }
        env.pop("METRICS_DIR", None)  # each gunicorn makes (and removes) its own
        if otlp_endpoint is not None:
            # Traced, but only what a caller's sampled traceparent asks for (the probe): the
            # load's own requests start unsampled traces, so tracing barely loads the roll.
            env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0", "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip
        self.instances = [Instance(f"s{n}", directory, env) for n in (1, 2, 3)]
        self.haproxy = HAProxy(directory, self.instances)
        targets = [f"127.0.0.1:{instance.metrics_port}" for instance in self.instances]
        self.prometheus = PrometheusServer(directory / "prometheus", targets)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[aiohttp.ClientSession]:
        """Everything started and ready (all three in rotation); everything stopped after."""
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            for instance in self.instances:
                instance.start()
            self.haproxy.start(self.haproxy_binary)
            self.prometheus.start()
            for instance in self.instances:
                await instance.wait_ready(http)
            deadline = time.monotonic() + 30
            while set((await self.haproxy.servers(http)).values()) != {"UP"}:
                assert time.monotonic() < deadline, await self.haproxy.servers(http)
                await asyncio.sleep(0.1)
            yield http
        finally:
            await http.close()
            self.prometheus.stop()
            self.haproxy.stop()
            for instance in self.instances:
                if instance.process is not None:
                    await instance.terminate(self.budget.graceful_timeout_seconds + 15)

    async def restart(
        self, instance: Instance, http: aiohttp.ClientSession, rotation: Rotation, tally: Tally
    ) -> Restart:
        """Terminate it as Kubernetes does a pod: out of the balancer's rotation (the
        endpoints controller), the preStop sleep while it still serves what it has, then
        SIGTERM; wait for exit 0, start it, see it back."""
        at = tally.now()
        began = time.monotonic()
        await self.haproxy.set_state(http, instance.name, "maint")
        while rotation.in_rotation(instance.name):  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # HAProxy's view is polled; nothing to wait on
        out_after = time.monotonic() - began
        await asyncio.sleep(max(0.0, self.budget.pre_stop_seconds - out_after))
        exit_code = await instance.terminate(self.budget.graceful_timeout_seconds + 15)
        exited_after = time.monotonic() - began
        started_at = time.time()
        instance.start()
        started = time.monotonic()
        await instance.wait_ready(http)
        ready_after = time.monotonic() - started
        await self.haproxy.set_state(http, instance.name, "ready")  # the pod's new endpoint
        while not rotation.in_rotation(instance.name) or not (await self.haproxy.servers(http)).get(
            instance.name, ""
        ).startswith("UP"):
            assert time.monotonic() - started < 90, f"{instance.name} never back in rotation"
            await asyncio.sleep(0.02)
        back_after = time.monotonic() - started
        return Restart(instance.name, at, exit_code, round(out_after, 2), round(exited_after, 2),
                       round(ready_after, 2), round(back_after, 2), started_at)  # fmt: skip

    async def run(self, *, clients: int, users: int, rounds: int, settle: float) -> Report:
        """`rounds` full rolling restarts under load, `settle` seconds of load around each."""
        tally = Tally()
        async with self.running() as http:
            load = Load(self.haproxy.base, [], tally)
            async with aiohttp.ClientSession() as setup:
                await load.create_users(setup, users)
            rotation = Rotation()
            stop_watch, stop_load = asyncio.Event(), asyncio.Event()
            watcher = asyncio.create_task(watch_rotation(self.haproxy, http, rotation, stop_watch))
            load_began_wall, load_began = time.time(), time.monotonic()
            tally.origin = load_began
            running = asyncio.create_task(load.run(clients, stop_load))
            restarts: list[Restart] = []
            try:
                await asyncio.sleep(settle)
                for _ in range(rounds):
                    for instance in self.instances:
                        restarts.append(await self.restart(instance, http, rotation, tally))
                        await asyncio.sleep(settle / 2)
                await asyncio.sleep(settle / 2)
            finally:
                stop_load.set()
                await running
                stop_watch.set()
                await watcher
            load_ended_wall = time.time()
            duration = time.monotonic() - load_began
            out = {name: [round(end - start, 2) for start, end in spans]
                   for name, spans in rotation.intervals.items()}  # fmt: skip
            stored, matches = self._stored(tally)
            prometheus = await self._prometheus(tally, restarts, load_began_wall, load_ended_wall)
        return Report(tally, restarts, out, stored, matches, duration, prometheus)

    def _stored(self, tally: Tally) -> tuple[int, bool]:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.mongo_url)
        try:
            orders = client[self.database]["orders"]
            stored = {str(doc["_id"]) for doc in orders.find({}, {"_id": 1})}
            client.drop_database(self.database)  # counted: nothing else reads it
        finally:
            client.close()
        acked = {ack.order_id for acks in tally.acked.values() for ack in acks}
        return len(stored), stored == acked

    async def _prometheus(
        self, tally: Tally, restarts: list[Restart], began: float, ended: float
    ) -> dict[str, Any]:
        """Totals, rate, p99 and resets over the three targets, as Prometheus has them."""
        async with aiohttp.ClientSession() as http:
            api = PrometheusApi(http, self.prometheus.url)
            expected = {key: float(n) for key, n in tally.answered.items()}
            deadline = time.monotonic() + 30
            starts: dict[str, list[float]] = defaultdict(list)
            for restart in restarts:
                starts[self._target(restart.instance)].append(restart.started_at)
            while (found := await exact_totals(api, time.time(), starts)).counts != expected:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            totals = found.counts
            at = time.time()
            buckets = await exact_totals(
                api, at, starts, "http_request_duration_seconds_bucket", ("le",)
            )
            window = f"{math.ceil(at - began) + 5}s"
            selector = f'route=~"{ROUTE_MATCHER}"'
            increase = await api.query(
                f"sum(increase(http_requests_total{{{selector}}}[{window}]))"
            )
            p99 = await api.query(
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(http_request_duration_seconds_bucket{{{selector}}}[{window}])))"
            )
            # The fleet's request rate over the middle of the load, beside the clients' count.
            middle = began + (ended - began) / 2
            span = max(5, math.floor((ended - began) / 4))
            query = f"sum(rate(http_requests_total{{{selector}}}[{span}s]))"
            rate = (await api.get("/api/v1/query", query=query, time=str(middle)))["result"]
            counted = sum(1 for t in tally.done_at if middle - span < t <= middle)
            resets = await api.query(f"resets(http_requests_total{{{selector}}}[{window}])")
            cache = {}
            for name in ("cache_errors_total", "cache_invalidations_total", "db_retries_total"):
                summed = await api.query(f"sum(increase({name}[{window}]))")
                cache[name] = round(float(summed[0]["value"][1]), 1) if summed else 0.0
        restarted = Counter(self._target(r.instance) for r in restarts)
        by_instance: dict[str, float] = defaultdict(float)
        for series in resets:  # the most resets any one series of an instance had
            name = series["metric"]["instance"]
            by_instance[name] = max(by_instance[name], float(series["value"][1]))
        beyond = max((n - restarted[name] for name, n in by_instance.items()), default=0.0)
        missing = {"|".join(k): v - totals.get(k, 0) for k, v in expected.items()}
        return {
            "totals_match": totals == expected,
            "totals_missing": {key: n for key, n in missing.items() if n},
            "requests_total_exact": sum(totals.values()),
            "increase_estimate": round(float(increase[0]["value"][1]), 1) if increase else None,
            "p99_seconds": float(p99[0]["value"][1]) if p99 else None,
            # Exact cumulative counts per bucket bound, over the fleet and its restarts.
            "buckets": {le: buckets.counts.get((le,), 0.0) for (le,) in sorted(buckets.counts)},
            "rate_rps_mid_load": round(float(rate[0]["value"][1]), 1) if rate else None,
            "client_rps_mid_load": round(counted / span, 1),
            "resets_by_instance": dict(sorted(by_instance.items())),
            "restarts_by_instance": dict(sorted(restarted.items())),
            "resets_beyond_own_restarts": max(0.0, beyond),
            "backwards_within_a_process": found.backwards[:10],
            "increase": cache,
        }

    def _target(self, name: str) -> str:
        """The Prometheus `instance` label of an instance: its metrics address."""
        port = next(instance.metrics_port for instance in self.instances if instance.name == name)
        return f"127.0.0.1:{port}"


@dataclass
class Totals:
    """Each series' exact total keyed by some of its labels, and counters seen going back
    within a process."""

    counts: dict[tuple[str, ...], float]
    backwards: list[str]


async def exact_totals(
    api: PrometheusApi,
    at: float,
    starts: dict[str, list[float]],
    metric: str = "http_requests_total",
    keys: tuple[str, ...] = ("method", "route", "status"),
) -> Totals:
    """Each process's last value of each series, summed by `keys`: exact, where increase()
    extrapolates.

    `starts` holds, per target, when its instance was started again. A series' samples are
    split there, one run per process: a restarted counter that is back above its old value
    by its first scrape is then still counted from zero (resets() would miss it), and a
    counter that goes back *within* one process is caught.
    """
    query = f'{metric}{{route=~"{ROUTE_MATCHER}"}}[30m]'
    data = await api.get("/api/v1/query", query=query, time=str(at))
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    backwards = []
    for series in data["result"]:
        labels = series["metric"]
        cuts = sorted(starts.get(labels["instance"], []))
        last: dict[int, float] = {}
        for stamp, text in series["values"]:
            run, value = bisect.bisect_right(cuts, float(stamp)), float(text)
            if value < last.get(run, 0.0):
                backwards.append(f"{labels} went from {last[run]} to {value} at {stamp}")
            last[run] = value
        totals[tuple(labels[key] for key in keys)] += sum(last.values())
    return Totals({key: value for key, value in totals.items() if value}, backwards)


@contextlib.contextmanager
def servers(directory: Path, sentinel: bool = False) -> Iterator[tuple[MongoServer, str]]:
    """SecantusDB, and Redis (with `sentinel`: a primary, a replica, three sentinels);
    yields the database and REDIS_URL."""
    mongo, redis = MongoServer(directory / "mongo"), RedisServer(directory / "redis")
    group = SentinelGroup(directory / "sentinel") if sentinel else None
    mongo.start()
    if group is None:
        redis.start()
    else:
        group.start()
    try:
        yield mongo, redis.url if group is None else group.url
    finally:
        if group is None:
            redis.stop()
        else:
            group.stop()
        mongo.stop()


def render(figures: dict[str, Any]) -> str:
    prom = figures["prometheus"]
    lines = [
        f"requests sent {figures['requests_sent']}, failed {figures['failed']}; "
        f"writes acknowledged {figures['writes_acknowledged']}, stored {figures['orders_stored']} "
        f"(same ids: {figures['stored_matches_acknowledged']}); stale reads "
        f"{figures['stale_reads']} of {figures['reads_checked']} checked",
        f"{len(figures['restarts'])} restarts in {figures['load_seconds']} s of load "
        f"({figures['client_rps']} req/s, client p99 {figures['client_p99_ms']} ms)",
    ]
    for restart in figures["restarts"]:
        lines.append(
            f"  {restart['instance']} (terminated at +{restart['at_seconds']} s): out of rotation "
            f"{restart['out_after_seconds']} s after, "
            f"exit {restart['exit_code']} at {restart['exited_after_seconds']} s; "
            f"ready {restart['ready_after_seconds']} s after start, back in rotation at "
            f"{restart['back_after_seconds']} s"
        )
    spans = [s for spans in figures["out_of_rotation_seconds"].values() for s in spans]
    if spans:
        lines.append(f"out of rotation per restart: {min(spans)}-{max(spans)} s (HAProxy stats)")
    lines.append(
        f"Prometheus: exact total {prom['requests_total_exact']:.0f} (matches the clients: "
        f"{prom['totals_match']}), increase() {prom['increase_estimate']}, p99 "
        f"{prom['p99_seconds'] and round(prom['p99_seconds'] * 1000, 1)} ms, rate mid-load "
        f"{prom['rate_rps_mid_load']} req/s (clients {prom['client_rps_mid_load']}), resets "
        f"beyond each instance's own restarts {prom['resets_beyond_own_restarts']}"
    )
    return "```text\n" + "\n".join(lines) + "\n```"


def main() -> int:
    parser = argparse.ArgumentParser(prog="make fleet", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="full rolling restarts")
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of load between")
    parser.add_argument("--sentinel", action="store_true", help="Redis through Sentinel")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    haproxy = subprocess.run(["sh", "-c", "command -v haproxy"], capture_output=True, text=True,
                             check=False).stdout.strip()  # fmt: skip
    if not haproxy:
        print("fleet: haproxy is missing: sudo apt-get install haproxy", file=sys.stderr)
        return 2
    budget = rollout_budget()
    with (
        tempfile.TemporaryDirectory(prefix="user-service-fleet-") as temp,
        servers(Path(temp), args.sentinel) as (mongo, redis_url),
    ):
        fleet = Fleet(Path(temp), mongo.url, redis_url, budget, haproxy)
        report = asyncio.run(fleet.run(clients=args.clients, users=args.users,
                                       rounds=args.rounds, settle=args.settle))  # fmt: skip
    figures = {**report.figures(), "budget": vars(budget), "machine": machine()}
    name = "fleet-sentinel" if args.sentinel else "fleet"
    publish(name, figures, render(figures), readme=args.update_readme)
    ok = figures["failed"] == figures["stale_reads"] == 0
    ok = ok and figures["stored_matches_acknowledged"] and figures["prometheus"]["totals_match"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
