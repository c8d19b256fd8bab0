"""Graceful shutdown of the real servers (python -m service, and gunicorn with 2 workers),
under concurrent load from this test process: nothing started before SIGTERM may fail."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.servers import MongoServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DRAIN_SECONDS = 1.5
GRACEFUL_SECONDS = 5.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str


def _command(kind: str) -> list[str]:
    if kind == "gunicorn":
        return [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py"]
    return [sys.executable, "-m", "service"]


@pytest.fixture(params=["python -m service", "gunicorn"])
def server(
    request: pytest.FixtureRequest,
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
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        _command(request.param), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, process=process)
        yield Server(process, f"http://127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


async def _ready(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        async with session.get(f"{base}/health/ready") as response:
            if response.status == 200:
                return
        await asyncio.sleep(0.05)
    pytest.fail("server never became ready")


async def test_sigterm_drains_then_exits_0_without_failing_started_requests(
    server: Server,
) -> None:
    async with aiohttp.ClientSession() as session:
        await _ready(session, server.base)
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
    assert set(before) == {200}, "a request started before SIGTERM failed"
    during_drain = [
        o for started, o in results if signalled <= started < signalled + DRAIN_SECONDS - 0.3
    ]
    assert during_drain
    assert set(during_drain) == {200}, "the server stopped serving before the drain ended"
