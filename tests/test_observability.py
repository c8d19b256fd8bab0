"""Metrics (single process and summed over gunicorn workers) and structured logs."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from service.app import create_app
from service.observability.access_log import ACCESS_LOG
from service.observability.logging_setup import HANDLER_NAME, configure_logging
from service.settings.loading import load_settings
from service.settings.model import LogSettings, Settings
from tests.helpers.app import AiohttpClient, Client, access_lines, json_log_app, ready_client
from tests.helpers.http import until_ready
from tests.helpers.metrics import both_workers_published, parse, replace_a_worker, scrape, total
from tests.helpers.mongo import FailPoint
from tests.helpers.servers import MongoServer, RedisServer, free_port, wait_for_port
from tests.helpers.service import spawn_service, two_gunicorn_workers, worker_pids


async def test_request_metrics_use_route_templates_and_skip_metrics(client: Client) -> None:
    for _ in range(3):
        assert (await client.get("/users/nobody")).status == 404
    for index in range(20):
        await client.get(f"/random/path/{index}")
    await client.get("/metrics")
    samples = await scrape(client)
    assert total(samples, "http_requests_total", method="GET", route="/users/{user_id}",
                 status="404") == 3  # fmt: skip
    unmatched = [
        s for s in samples if s[0] == "http_requests_total" and s[1]["route"] == "<unmatched>"
    ]
    assert len(unmatched) == 1  # 20 different paths, one series
    assert unmatched[0][2] == 20
    assert total(samples, "http_requests_total", route="/metrics") == 0
    assert total(samples, "http_request_duration_seconds_count", route="/users/{user_id}") == 3
    assert total(samples, "http_requests_in_progress") == 0
    buckets = {s[1]["le"] for s in samples if s[0] == "http_request_duration_seconds_bucket"}
    assert {"0.001", "0.5", "+Inf"} <= buckets


async def test_domain_and_process_metrics(
    client: Client, fail_point: FailPoint, settings: Settings
) -> None:
    created = await client.post("/users", json={"name": "A", "email": "a@example.com"})
    user_id = (await created.json())["id"]
    await fail_point.arm({"times": 1}, failCommands=["find"], errorCode=9001,
                         appName=settings.mongo.app_name)  # fmt: skip
    assert (await client.get(f"/users/{user_id}")).status == 200
    samples = await scrape(client)
    assert total(samples, "db_retries_total", error_class="OperationFailure") == 1
    assert (
        total(samples, "db_operation_duration_seconds_count", operation="insert", outcome="ok") >= 1
    )
    assert (
        total(samples, "db_operation_duration_seconds_count", operation="find", outcome="error")
        == 1
    )
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "process_start_time_seconds"):  # fmt: skip
        assert total(samples, name) > 0, name


async def test_cache_metrics(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    cached = dataclasses.replace(
        settings, cache=dataclasses.replace(settings.cache, backend="memory")
    )
    client = await ready_client(aiohttp_client, create_app(cached))
    user = await (await client.post("/users", json={"name": "A", "email": "a@example.com"})).json()
    for _ in range(3):
        await client.get(f"/users/{user['id']}")
    await client.patch(f"/users/{user['id']}", json={"name": "B"})
    samples = await scrape(client)
    assert total(samples, "cache_misses_total", cache="user") == 1
    assert total(samples, "cache_hits_total", cache="user") == 2
    assert total(samples, "cache_invalidations_total", cache="user") == 1


@pytest.mark.parametrize("accept", ["", "text/plain", "application/vnd.google.protobuf", "*/*"])
async def test_prometheus_content_negotiation(client: Client, accept: str) -> None:
    """aioprometheus negotiates; Prometheus dropped its binary format, so text it is."""
    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE http_requests_total counter" in await response.text()


async def test_access_log_lines_are_structured(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(json_log_app(settings))
    response = await client.get("/users/nobody", headers={"X-Request-ID": "req-42"})
    await client.get("/metrics")
    assert response.status == 404
    lines = access_lines(client.app)
    assert len(lines) == 1  # the scrape is not logged
    entry = lines[0]
    keys = ("logger", "level", "method", "route", "status", "request_id")
    assert {k: entry[k] for k in keys} == {
        "logger": "service.access", "level": "INFO", "method": "GET", "route": "/users/{user_id}",
        "status": 404, "request_id": "req-42",
    }  # fmt: skip
    assert isinstance(entry["duration_ms"], float | int)
    assert entry["duration_ms"] >= 0
    assert entry["remote"] == "127.0.0.1"
    assert entry["message"] == f"GET /users/{{user_id}} 404 {entry['duration_ms']:.2f}ms"
    # The same timestamp form as every other JSON log line.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(entry["time"]))


async def test_access_lines_are_written_in_batches_without_being_asked(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    app = json_log_app(settings)
    client = await aiohttp_client(app)
    await client.get("/health/live")
    stream = app[ACCESS_LOG].stream
    assert isinstance(stream, io.StringIO)
    for _ in range(40):  # the flusher writes every FLUSH_SECONDS
        if stream.getvalue():
            break
        await asyncio.sleep(0.05)
    assert '"route":"/health/live"' in stream.getvalue()


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.7"}
    remotes = []
    for trusted in ("", "127.0.0.1,10.0.0.0/8"):
        settings = load_settings({**test_env, "TRUSTED_PROXIES": trusted})
        client = await aiohttp_client(json_log_app(settings))
        await client.get("/health/live", headers=forwarded)
        remotes.append((access_lines(client.app))[0]["remote"])
    assert remotes == ["127.0.0.1", "203.0.113.9"]


async def test_secrets_never_reach_logs_or_bodies(
    aiohttp_client: AiohttpClient, test_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        **test_env,
        "MONGO_URL": f"mongodb://app:mongo-s3cret@127.0.0.1:{free_port()}/?directConnection=true",
        "REDIS_URL": f"redis://:redis-s3cret@127.0.0.1:{free_port()}/0",
        "CACHE_BACKEND": "redis",
    }
    with caplog.at_level(logging.DEBUG):
        client = await aiohttp_client(create_app(load_settings(env)))
        paths = ("/health/ready", "/users/someone", "/orders/x", "/metrics")
        bodies = [await (await client.get(path)).text() for path in paths]
        await asyncio.sleep(0.6)  # let the background index task fail and log once more
    text = "\n".join(bodies) + "\n".join(
        f"{record.getMessage()} {record.__dict__}" for record in caplog.records
    )
    assert "s3cret" not in text
    assert any(
        r.name == "service.cache.response_cache" for r in caplog.records
    )  # it did log, just not that


def test_configuring_logging_again_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    theirs = logging.StreamHandler(io.StringIO())  # another library's, or pytest's
    root.addHandler(theirs)
    log_settings = LogSettings(level="INFO", format="json", access=True, trusted_proxies=())
    try:
        configure_logging(log_settings)
        configure_logging(log_settings)
        ours = [handler for handler in root.handlers if handler.name == HANDLER_NAME]
        assert len(ours) == 1
        assert theirs in root.handlers
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def _json_log_line_of_a_request(test_env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, **test_env, "PORT": str(port), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    log = tmp_path / "service.log"
    process = spawn_service("python -m service", env, log)
    try:
        wait_for_port(port, process=process)
        subprocess.run(["python3", "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/health/live')"],
                       check=True, timeout=10)  # fmt: skip
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access: list[dict[str, object]] = [
        line for line in lines if line.get("logger") == "service.access"
    ]
    assert access, log.read_text()
    return access[0]


def test_production_style_logs_are_one_json_object_per_line(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    entry = _json_log_line_of_a_request(test_env, tmp_path)
    assert entry["route"] == "/health/live"
    assert entry["status"] == 200
    assert len(str(entry["request_id"])) == 32


@pytest.fixture
def gunicorn_two_workers(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with two_gunicorn_workers(test_env, redis_server, tmp_path) as running:
        yield running


async def test_metrics_on_their_own_port_in_process(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    port = free_port()
    app = create_app(
        dataclasses.replace(settings, metrics=dataclasses.replace(settings.metrics, port=port))
    )
    client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.get("/health/live")).status == 200
    hidden = await client.get("/metrics")
    assert hidden.status == 404
    assert hidden.content_type == "application/problem+json"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as scrape,
    ):
        assert scrape.status == 200
        samples = parse(await scrape.text())
    assert total(samples, "http_requests_total", route="/health/live") == 3


async def test_metrics_port_is_shared_by_gunicorn_workers(
    mongo_server: MongoServer, redis_server: RedisServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {**test_env, "METRICS_PORT": str(metrics_port)}
    with two_gunicorn_workers(env, redis_server, tmp_path) as (base, master):
        wait_for_port(metrics_port, process=master)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            await until_ready(http, base)
            async with http.get(f"{base}/metrics") as hidden:
                assert hidden.status == 404
            pids = await both_workers_published(http, f"http://127.0.0.1:{metrics_port}")
            workers = worker_pids(master.pid)
            for _ in range(10):  # new connections: the kernel spreads them over both sockets
                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as scrape:
                    assert scrape.status == 200
        # A worker that could not bind the port would have died at start-up and been replaced.
        assert len(workers) == 2
        assert worker_pids(master.pid) == workers
        assert pids == {str(pid) for pid in workers}


async def test_gunicorn_scrapes_add_up_over_workers_and_restarts(
    gunicorn_two_workers: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, master = gunicorn_two_workers
    # force_close: a new connection per request, so the kernel spreads them over workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await until_ready(http, base)
        await both_workers_published(http, base)
        async with http.post(f"{base}/users", json={"name": "A", "email": "a@example.com"}) as r:
            path = f"{base}/users/{(await r.json())['id']}"

        async def count() -> tuple[float, set[str]]:
            async with http.get(f"{base}/metrics") as response:
                samples = parse(await response.text())
            pids = {s[1]["pid"] for s in samples if s[0] == "process_start_time_seconds"}
            return total(samples, "http_requests_total", route="/users/{user_id}"), pids

        sent = 0
        for _ in range(3):
            await asyncio.gather(*(http.get(path) for _ in range(20)))
            sent += 20
            seen_pids: set[str] = set()
            for _ in range(6):
                counted, pids = await count()
                assert counted == sent
                seen_pids |= pids
        assert len(seen_pids) == 2  # both workers published and were summed

        victim = await replace_a_worker(master, timeout=20)
        for _ in range(6):
            counted, pids = await count()
            assert counted == sent  # the dead worker's requests are still counted
            assert str(victim) not in pids  # but its process gauges are gone
        async with http.get(f"{base}/health/ready") as ready:
            assert ready.status == 200
