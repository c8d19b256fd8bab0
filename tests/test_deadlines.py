"""Deadlines that stop the work: an abandoned database call ends with its request, on both
drivers, and the server is told how long it may spend (`maxTimeMS`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pymongo

from service.app import create_app
from service.settings.loading import default_config_dir, load_settings
from service.settings.model import RetrySettings, Settings
from service.storage.mongo import MONGO, MONGO_LISTENERS, Document, Mongo
from service.storage.retry import ANSWER_RESERVE_SECONDS, RetryPolicy, deadline_var
from tests.helpers.app import AiohttpClient, Client, ready_client, retries
from tests.helpers.http import until_ready
from tests.helpers.mongo import CommandRecorder, FailPoint
from tests.helpers.servers import MongoServer, free_port, wait_for_port
from tests.helpers.service import spawn_service

BURST = 12  # more than Motor's thread pool on this machine (5 per core)
USER = {"_id": "u1", "name": "A", "email": "a@example.com", "version": 0}


async def test_a_stalled_server_leaves_no_driver_work_behind(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings,
    recorder: CommandRecorder,
) -> None:  # fmt: skip
    """Every request of a burst answers 503 in time, no driver call outlives its answer by
    100 ms, and the first request after the stall ends is served at once (not queued behind
    abandoned calls: Motor's threads, PyMongo's pool)."""
    await mongo.users.insert_one(USER)
    assert (await client.get("/users/u1")).status == 200
    await fail_point.arm("alwaysOn", failCommands=["find"], blockConnection=True,
                         blockTimeMS=4000, appName=settings.mongo.app_name)  # fmt: skip
    recorder.clear()
    deadline = settings.request.deadline_seconds

    async def timed_get() -> tuple[int, float]:
        started = time.monotonic()
        response = await client.get("/users/u1")
        await response.read()
        return response.status, time.monotonic() - started

    answers = await asyncio.gather(*(timed_get() for _ in range(BURST)))
    answered = time.monotonic()
    assert {status for status, _ in answers} == {503}
    assert max(elapsed for _, elapsed in answers) < deadline + 0.5  # the watchdog's tick
    await asyncio.sleep(max(0.0, answered + 0.1 - time.monotonic()))
    assert recorder.outstanding() == []
    started = recorder.started_names()
    assert started.count("find") > BURST, "each request should have tried more than once"
    # The stall cost retries, not a clog: the next request goes straight through.
    await fail_point.off()
    before = retries(client)
    response = await client.get("/users/u1")
    assert response.status == 200
    assert retries(client) == before


async def test_every_attempt_tells_the_server_its_budget(
    client: Client, mongo: Mongo, settings: Settings, recorder: CommandRecorder
) -> None:
    await mongo.users.insert_one(USER)
    recorder.clear()
    assert (await client.get("/users/u1")).status == 200
    finds = [command for command in recorder.commands if "find" in command]
    assert finds, recorder.commands
    for command in finds:
        assert 0 < command["maxTimeMS"] <= settings.mongo.socket_timeout_ms


async def test_the_server_stops_an_operation_past_its_budget(
    aiohttp_client: AiohttpClient, settings: Settings, own_mongo_server: MongoServer,
    recorder: CommandRecorder,
) -> None:  # fmt: skip
    """The server's side of a deadline. SecantusDB's `maxTimeAlwaysTimeOut` makes the server
    abort every operation that carries a time limit at its first check (and run those
    without one to completion): each attempt is stopped by the server itself (code 50,
    MaxTimeMSExpired), none is left running there when the request answers 503. On a server
    of this test's own, since the fail point applies to every client."""
    mongo = dataclasses.replace(settings.mongo, url=own_mongo_server.url)
    app = create_app(dataclasses.replace(settings, mongo=mongo))
    app[MONGO_LISTENERS].append(recorder)
    client = await ready_client(aiohttp_client, app)
    await app[MONGO].users.insert_one(USER)
    await app[MONGO].client.admin.command(
        {"configureFailPoint": "maxTimeAlwaysTimeOut", "mode": "alwaysOn"}
    )
    recorder.clear()
    response = await client.get("/users/u1")
    assert response.status == 503
    # The user and the orders are read in parallel; the first to give up ends the request,
    # and the other's attempt then in flight has 100 ms to report its end (the bound;
    # under Motor the report comes from a driver thread, after the answer).
    await asyncio.sleep(0.1)
    finds = recorder.started_names().count("find")
    assert finds >= settings.retry.max_tries
    assert recorder.outstanding() == []
    assert [failure.get("code") for failure in recorder.failures] == [50] * finds


async def test_attempt_budgets_share_the_time_left() -> None:
    policy = RetryPolicy(RetrySettings(base_ms=50, cap_ms=500, max_tries=3), 1.5)
    assert policy.attempt_budget(1) == 1.5  # outside a request: the socket timeout
    token = deadline_var.set(asyncio.get_running_loop().time() + 2.0)
    try:
        first = policy.attempt_budget(1)
        assert 0.6 < first <= (2.0 - ANSWER_RESERVE_SECONDS) / 3
        assert policy.attempt_budget(2) < 1.0
        assert policy.attempt_budget(3) == 1.5  # the socket timeout caps the last one
    finally:
        deadline_var.reset(token)


async def test_shutdown_does_not_wait_for_abandoned_calls(
    test_env: dict[str, str], own_mongo_server: MongoServer, tmp_path: Path
) -> None:
    """SIGTERM while a burst is stuck on a stalled server: the requests answer 503 by their
    deadline and the process exits 0 soon after. Before attempts had budgets, Motor's
    threads ran on to their socket timeout (4.5 s here, inside a 5 s deadline) and the
    interpreter waited for them before exiting: about 4 s after the last answer."""
    config = tmp_path / "config"
    shutil.copytree(default_config_dir(), config)
    test_toml = (config / "test.toml").read_text()
    assert "[mongo]\n" in test_toml
    (config / "test.toml").write_text(
        test_toml.replace("[mongo]\n", "[mongo]\nsocket_timeout_ms = 4500\n", 1)
    )
    port = free_port()
    env = {**os.environ, **test_env, "MONGO_URL": own_mongo_server.url, "PORT": str(port),
           "SERVICE_CONFIG_DIR": str(config), "REQUEST_DEADLINE_SECONDS": "5",
           "SHUTDOWN_DRAIN_SECONDS": "0.3", "GRACEFUL_TIMEOUT_SECONDS": "10"}  # fmt: skip
    settings = load_settings(env)
    assert settings.mongo.socket_timeout_ms == 4500
    process = spawn_service("python -m service", env, tmp_path / "server.log")
    try:
        wait_for_port(port, process=process)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await until_ready(session, base)
            async with session.post(f"{base}/users", json={"name": "A", "email": "a@x.io"}) as r:
                assert r.status == 201
                path = f"{base}/users/{(await r.json())['id']}"
            with pymongo.MongoClient[Document](own_mongo_server.url) as admin:
                admin.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                                     "data": {"failCommands": ["find"], "blockConnection": True,
                                              "blockTimeMS": 8000}})  # fmt: skip

            async def get() -> int:
                async with session.get(path) as response:
                    await response.read()
                    return response.status

            started = time.monotonic()
            burst = [asyncio.create_task(get()) for _ in range(BURST)]
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*burst)
            answered = time.monotonic()
            exit_code = await asyncio.to_thread(process.wait, 30)
            exited = time.monotonic()
        assert set(statuses) == {503}
        assert exit_code == 0
        assert answered - started < settings.request.deadline_seconds + 0.5
        assert exited - answered < 2.0, "shutdown waited for abandoned driver calls"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with pymongo.MongoClient[Document](own_mongo_server.url) as admin:
            admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
