"""The driver seam: one setting picks Motor or PyMongo's async client, and the service says
which one it runs (the start-up line, `user_service_build_info`)."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from aiohttp import web
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient

from service.settings.loading import load_settings
from service.settings.model import ConfigError, MongoDriver, Settings
from service.storage.mongo import Mongo
from tests.helpers import ROOT
from tests.helpers.app import AiohttpClient, Client


async def test_the_setting_picks_the_client(settings: Settings, mongo_driver: MongoDriver) -> None:
    mongo = Mongo(settings.mongo)
    try:
        expected = {"motor": AsyncIOMotorClient, "pymongo": AsyncMongoClient}[mongo_driver]
        assert type(mongo.client) is expected
        await mongo.ping()
    finally:
        await mongo.close()


@pytest.mark.one_driver
def test_motor_is_the_default(test_env: dict[str, str]) -> None:
    environ = {name: value for name, value in test_env.items() if name != "MONGO_DRIVER"}
    assert load_settings(environ).mongo.driver == "motor"


@pytest.mark.one_driver
def test_an_unknown_driver_is_a_one_line_error(test_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^MONGO_DRIVER: expected one of motor, pymongo"):
        load_settings({**test_env, "MONGO_DRIVER": "mongoengine"})


async def test_metrics_name_the_build_and_its_driver(
    client: Client, mongo_driver: MongoDriver
) -> None:
    text = await (await client.get("/metrics")).text()
    assert "# TYPE user_service_build_info gauge" in text
    lines = [line for line in text.splitlines() if line.startswith("user_service_build_info{")]
    assert len(lines) == 1, lines
    series, value = lines[0].rsplit(" ", 1)
    assert float(value) == 1
    assert dict(re.findall(r'(\w+)="([^"]*)"', series)) == {
        "version": version("user-service"),
        "driver": mongo_driver,
        "python": platform.python_version(),
    }


async def test_the_start_up_line_names_the_driver(
    aiohttp_client: AiohttpClient,
    app: web.Application,
    mongo_driver: MongoDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="service.storage.mongo"):
        await aiohttp_client(app)
    lines = [r.getMessage() for r in caplog.records if r.name == "service.storage.mongo"]
    assert any(line.startswith(f"starting with MongoDB driver {mongo_driver} ") for line in lines)


def test_calls_cancelled_as_their_wait_for_a_server_ends_leave_pymongo_working() -> None:
    """A call cancelled (a deadline, the readiness bound, shutdown) just as PyMongo's wait for
    a server times out must leave the topology lock as it found it. This is why the service
    needs Python 3.12 or later (setup.cfg: 3.13): PyMongo waits with `asyncio.wait_for`,
    which on 3.11 ran the wait in a task of its own, and a call cancelled in that instant
    released a lock another call held ("Lock is not acquired"); then calls never ended,
    cancelled or not (this scenario on 3.11 hangs every run). Since 3.12 `wait_for` waits in
    the caller's task. The scenario runs in its own interpreter, so a client that hangs
    fails this test instead of hanging the suite."""
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tests.helpers.cancelled_waits"],
            cwd=ROOT, capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the cancelled calls, or the call after them, never ended: the client hung")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout) == {
        "not_cancelled": [],
        "next_call": "ServerSelectionTimeoutError",
    }, run.stderr


def test_ci_refuses_a_run_narrowed_to_one_driver() -> None:
    """Locally a run may pick one driver; under CI pytest refuses to start (a usage error)
    rather than pass with one driver's database tests never run."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_health.py"]

    def collect(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
            check=False,
        )  # fmt: skip

    for narrowing in ("MONGO_DRIVER", "SERVICE_TEST_DRIVERS"):
        refused = collect(CI="true", **{narrowing: "pymongo"})
        assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
        assert "CI runs the database tests on every driver" in refused.stderr
    local = collect(CI="", MONGO_DRIVER="pymongo")
    assert local.returncode == 0, local.stdout + local.stderr
    assert "[pymongo]" in local.stdout
    assert "[motor]" not in local.stdout
