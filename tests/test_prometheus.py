"""Prometheus and promtool judge /metrics: the exposition lints clean, every histogram is
whole, and a real Prometheus scraping two gunicorn workers sees exactly what was sent."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from service.observability.metric_specs import SPECS
from service.observability.metrics import Metrics
from service.observability.samples import decode_key, read_samples, worker_file
from service.observability.scrape import exposition
from tests.helpers.app import Client
from tests.helpers.metrics import (
    PrometheusApi,
    PrometheusServer,
    both_workers_published,
    parse,
    replace_a_worker,
)
from tests.helpers.servers import MongoServer, RedisServer, free_port, wait_for_port
from tests.helpers.service import two_gunicorn_workers
from tests.helpers.tools import require_command

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

Sent = Counter[tuple[str, str]]  # (route, status) -> requests answered


def histogram_problems(text: str) -> list[str]:
    """Each histogram's buckets must be cumulative, end at +Inf, and +Inf must equal _count."""
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    counts: dict[tuple[str, str], float] = {}
    for name, labels, value in parse(text):
        le = labels.pop("le", None)
        series = json.dumps(sorted(labels.items()))
        if name.endswith("_bucket") and le is not None:
            buckets[(name.removesuffix("_bucket"), series)].append((float(le), value))
        elif name.endswith("_count"):
            counts[(name.removesuffix("_count"), series)] = value
    problems = []
    for key, points in buckets.items():
        bounds, values = zip(*sorted(points), strict=True)
        if list(values) != sorted(values):
            problems.append(f"{key}: buckets not cumulative: {values}")
        if bounds[-1] != math.inf:
            problems.append(f"{key}: no le=+Inf bucket")
        elif values[-1] != counts.get(key):
            problems.append(f"{key}: +Inf bucket {values[-1]} but _count {counts.get(key)}")
    assert buckets, "no histogram in the exposition"
    return problems


def promtool_check(text: str) -> None:
    """`promtool check metrics`: exit 0 and not a word of lint."""
    promtool = require_command("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                             capture_output=True, timeout=60, check=False)  # fmt: skip
    report = (checked.stdout + checked.stderr).decode()
    assert (checked.returncode, report) == (0, ""), text


def test_counters_and_only_counters_end_in_total() -> None:
    for spec in SPECS:
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec


def test_histograms_are_cumulative_and_whole() -> None:
    metrics = Metrics(None)
    series = metrics.series("GET", "/x")
    for seconds in (0.0005, 0.001, 0.3, 0.3, 7.0, 60.0):  # on a bound, between, beyond 5 s
        series.started()
        series.finished(200, seconds)
    metrics.db_operation("find", "ok", 10.0)
    text = exposition(metrics, [])[0].decode()
    assert histogram_problems(text) == []
    samples = {(name, labels.get("le")): value for name, labels, value in parse(text)
               if labels.get("route") == "/x"}  # fmt: skip
    assert samples[("http_request_duration_seconds_bucket", "0.001")] == 2
    assert samples[("http_request_duration_seconds_bucket", "5.0")] == 4
    assert samples[("http_request_duration_seconds_bucket", "+Inf")] == 6
    assert samples[("http_request_duration_seconds_count", None)] == 6


def test_a_request_that_ends_after_close_leaves_the_sample_file_alone(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    series = metrics.series("GET", "/x")
    series.started()
    series.finished(200, 0.01)
    series.started()  # still in flight when the worker shuts down
    metrics.close()
    series.finished(200, 0.01)  # into memory nobody reads, not into the closed map
    series.started()
    series.finished(404, 0.01)
    samples = {
        (name, labels): value
        for key, value in read_samples(worker_file(tmp_path, os.getpid())).items()
        for name, part, labels in [decode_key(key)]
        if not part
    }
    route = (("method", "GET"), ("route", "/x"))
    assert samples == {
        ("http_requests_total", (*route, ("status", "200"))): 1.0,
        ("http_requests_in_progress", route): 1.0,
    }


async def test_promtool_accepts_the_single_process_exposition(client: Client) -> None:
    created = await client.post("/users", json={"name": "A", "email": "a@example.com"})
    assert created.status == 201
    for path in (f"/users/{(await created.json())['id']}", "/users/nobody", "/nowhere"):
        await client.get(path)
    text = await (await client.get("/metrics")).text()
    assert histogram_problems(text) == []
    promtool_check(text)


async def _scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_promtool_accepts_the_gunicorn_exposition(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    """Summed over two workers, and again once a dead worker's samples are in the archive."""
    require_command("promtool", "prometheus")
    with two_gunicorn_workers(test_env, redis_server, tmp_path) as (base, master):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await both_workers_published(http, base)
            for replaced in (False, True):
                if replaced:
                    await replace_a_worker(master)
                    await both_workers_published(http, base)
                for _ in range(20):
                    async with http.get(f"{base}/users/nobody") as response:
                        assert response.status == 404
                text = await _scrape(http, f"{base}/metrics")
                assert histogram_problems(text) == []
                promtool_check(text)


async def test_gunicorn_leaves_nothing_in_the_temporary_directory(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**test_env, "TMPDIR": str(temp), "METRICS_DIR": ""}
    with two_gunicorn_workers(env, redis_server, tmp_path) as (base, _):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await both_workers_published(http, base)  # both have written their samples
        (made,) = temp.iterdir()
        assert made.name.startswith("user-service-metrics-")
    assert list(temp.iterdir()) == []


async def test_gunicorn_removes_its_files_from_a_configured_directory(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    """A directory the operator made stays, with only what was there before."""
    directory = tmp_path / "shared"
    directory.mkdir()
    (directory / "not-ours.txt").write_text("kept")
    env = {**test_env, "METRICS_DIR": str(directory)}
    with two_gunicorn_workers(env, redis_server, tmp_path) as (base, _):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await both_workers_published(http, base)
        assert len(list(directory.glob("*.samples"))) == 2
    assert [path.name for path in directory.iterdir()] == ["not-ours.txt"]


async def _eventually[T](
    read: Callable[[], Awaitable[T]], holds: Callable[[T], bool], timeout: float = 60.0
) -> T:
    """Poll until `holds(read())` or the time is up; return the last value for the assert."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if holds(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def _send(http: aiohttp.ClientSession, base: str, user_path: str, sent: Sent) -> None:
    """A known mix: found users, missing users and unknown paths, tallied by route and status."""
    for path, route in ((user_path, "/users/{user_id}"), ("/users/nobody", "/users/{user_id}"),
                        ("/no/such/path", "<unmatched>")):  # fmt: skip
        for _ in range(10):
            async with http.get(f"{base}{path}") as response:
                sent[(route, str(response.status))] += 1


async def test_prometheus_sees_exact_totals_across_a_worker_restart(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    require_command("prometheus", "prometheus")
    metrics_port = free_port()
    env = {**test_env, "METRICS_PORT": str(metrics_port)}
    with two_gunicorn_workers(env, redis_server, tmp_path) as (base, master):
        wait_for_port(metrics_port, process=master)
        prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{metrics_port}"])
        prometheus.start()
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)  # spread over both workers
            ) as http:
                api = PrometheusApi(http, prometheus.url)
                assert await _eventually(api.ready, bool)
                await both_workers_published(http, f"http://127.0.0.1:{metrics_port}")
                sent: Sent = Counter()
                async with http.post(f"{base}/users", json={"name": "A", "email": "a@b.io"}) as r:
                    sent[("/users", str(r.status))] += 1
                    user_path = f"/users/{(await r.json())['id']}"
                await _send(http, base, user_path, sent)
                assert await _eventually(api.totals, dict(sent).__eq__) == dict(sent)

                await replace_a_worker(master)  # its counts now live in the archive
                await _send(http, base, user_path, sent)
                assert await _eventually(api.totals, dict(sent).__eq__) == dict(sent)
                assert sent[("/users/{user_id}", "200")] == 20

                resets = await api.query("sum(resets(http_requests_total[10m]))")
                assert [float(r["value"][1]) for r in resets] == [0.0]
                for histogram in ("http_request_duration_seconds", "db_operation_duration_seconds"):
                    ratio = await api.query(f'{histogram}_bucket{{le="+Inf"}}'
                                            f" / ignoring(le) {histogram}_count")  # fmt: skip
                    assert ratio, histogram
                    assert {r["value"][1] for r in ratio} == {"1"}, ratio

                async def targets() -> list[tuple[str, str]]:
                    active = (await api.get("/api/v1/targets", state="active"))["activeTargets"]
                    return [(t["health"], t["lastError"]) for t in active]

                assert await _eventually(targets, [("up", "")].__eq__) == [("up", "")]
        finally:
            prometheus.stop()
