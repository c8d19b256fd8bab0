"""Graceful shutdown of the real servers under concurrent load from this test process.

python -m service drains on its own: readiness 503 at once, still serving for the drain,
then a clean stop; nothing started before SIGTERM fails. gunicorn's stock aiohttp worker
stops accepting at once (the pod's preStop sleep and the front's retries cover that:
test_fleet.py), finishes what it has, and exits without SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pymongo
import pytest

from tests.helpers.http import until_ready
from tests.helpers.servers import MongoServer, free_port, wait_for_port
from tests.helpers.service import spawn_service

DRAIN_SECONDS = 1.5
GRACEFUL_SECONDS = 5.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str


@pytest.fixture(params=["python -m service", "gunicorn"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(
    kind: str,
    mongo_server: MongoServer,
    test_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        **test_env,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_SECONDS),
    }
    process = spawn_service(kind, env, tmp_path / "server.log")
    try:
        wait_for_port(port, process=process)
        yield Server(process, f"http://127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_drains_then_exits_0_without_failing_started_requests(
    server: Server, kind: str
) -> None:
    async with aiohttp.ClientSession() as session:
        await until_ready(session, server.base)
        async with session.post(
            f"{server.base}/users", json={"name": "A", "email": "a@example.com"}
        ) as created:
            assert created.status == 201
            path = f"{server.base}/users/{(await created.json())['id']}"

        async with session.get(path) as read:
            assert read.status == 200
        async with session.get(f"{server.base}/metrics") as scraped:
            assert scraped.status == 200
            assert "http_requests_total" in await scraped.text()

        results: list[tuple[float, int | str]] = []
        stop = asyncio.Event()

        async def load() -> None:
            async with aiohttp.ClientSession() as own:  # its own keep-alive connections
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        async with own.get(path) as response:
                            await response.read()
                            results.append((started, response.status))
                    except aiohttp.ClientError as error:
                        results.append((started, type(error).__name__))
                        await asyncio.sleep(0.01)

        workers = [asyncio.create_task(load()) for _ in range(16)]
        await asyncio.sleep(1.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        await asyncio.sleep(0.3)
        if kind == "python -m service":
            async with session.get(f"{server.base}/health/ready") as ready:
                assert ready.status == 503  # readiness flips at once, while still serving

        exit_code = await asyncio.to_thread(
            server.process.wait, DRAIN_SECONDS + GRACEFUL_SECONDS + 10
        )
        exited = time.monotonic()
        stop.set()
        await asyncio.gather(*workers)

    assert exit_code == 0
    assert exited - signalled < DRAIN_SECONDS + GRACEFUL_SECONDS
    before = [outcome for started, outcome in results if started < signalled]
    assert len(before) > 50
    if kind == "gunicorn":
        # A request sent on a keep-alive connection as the worker closes it may see the
        # connection go (the front retries those); none is answered with an error.
        assert not [o for o in before if isinstance(o, int) and o != 200], before
        return
    assert set(before) == {200}, "a request started before SIGTERM failed"
    during_drain = [
        o for started, o in results if signalled <= started < signalled + DRAIN_SECONDS - 0.3
    ]
    assert during_drain
    assert set(during_drain) == {200}, "the server stopped serving before the drain ended"


def test_gunicorn_gives_a_stuck_request_the_graceful_timeout_then_exits_without_sigkill(
    mongo_server: MongoServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    """A request stuck in the database (every find blocks past the socket timeout, and is
    retried up to ten times under a 60 s deadline) outlasts the graceful timeout. Once
    aiohttp's worker shuts the app down, it answers 503 at the graceful timeout
    (lifecycle.shut_down), inside the 95% of gunicorn's graceful_timeout that the worker
    waits, and the worker exits cleanly with time left to close its clients."""
    port = free_port()
    drain, graceful = 1.0, 3.0  # the drain is python -m service's: gunicorn has none
    env = {**os.environ, **test_env, "PORT": str(port), "WEB_CONCURRENCY": "1",
           "SHUTDOWN_DRAIN_SECONDS": str(drain), "GRACEFUL_TIMEOUT_SECONDS": str(graceful),
           "REQUEST_DEADLINE_SECONDS": "60", "RETRY_MAX_TRIES": "10",
           "LOG_LEVEL": "INFO"}  # fmt: skip
    log_path = tmp_path / "gunicorn.log"
    admin: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_server.url)
    process = spawn_service("gunicorn", env, log_path)
    try:
        wait_for_port(port, process=process)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/health/live") as live:  # noqa: S310 - http
            assert live.status == 200
        admin.admin.command(
            "configureFailPoint", "failCommand", mode="alwaysOn",
            data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": 10_000},
        )  # fmt: skip
        stuck = threading.Thread(
            target=_get_ignoring_errors, args=(f"{base}/users/{'a' * 24}",), daemon=True
        )
        stuck.start()
        time.sleep(0.5)  # the request is now waiting on the database
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=drain + graceful + 15)
        elapsed = time.monotonic() - signalled
    finally:
        admin.admin.command("configureFailPoint", "failCommand", mode="off")
        admin.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert exit_code == 0, text
    assert "SIGKILL" not in text, text
    assert "Worker exiting" in text, text  # its own clean exit, not gunicorn's kill
    assert graceful - 0.5 < elapsed < graceful + 5, (
        elapsed,
        text,
    )  # gunicorn margin


def _get_ignoring_errors(url: str) -> None:
    with contextlib.suppress(OSError):
        urllib.request.urlopen(url, timeout=30).close()  # noqa: S310 - http
