"""Retries, deadlines and recovery, against a real server that fails on purpose."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime

import pytest
from aiohttp import web
from pymongo.errors import AutoReconnect

from service.app import create_app
from service.domain.errors import Unavailable
from service.settings.model import Settings
from service.storage.mongo import Mongo
from service.storage.retry import RETRY_POLICY, call_with_retries, is_transient, retry_policy
from tests.helpers.app import AiohttpClient, Client, ready_client, retries, wait_until
from tests.helpers.mongo import CommandRecorder, FailPoint
from tests.helpers.servers import MongoServer

ORDER = {"_id": "o1", "user_id": "u1", "amount": 5, "currency": "USD", "items": [],
         "created_at": datetime(2026, 1, 1, tzinfo=UTC)}  # fmt: skip


@pytest.mark.parametrize("failures", [1, 2])
async def test_transient_failures_then_success(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings, failures: int
) -> None:
    await mongo.orders.insert_one(ORDER)
    await fail_point.arm({"times": failures}, failCommands=["find"], errorCode=9001,
                         appName=settings.mongo.app_name)  # fmt: skip
    response = await client.get("/orders/o1")
    assert response.status == 200
    assert retries(client) == failures
    app: web.Application = client.app
    assert app[RETRY_POLICY].counts[("orders.find", "OperationFailure")] == failures


async def test_a_stepping_down_server_is_retried(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    """Code 91 (ShutdownInProgress) makes the driver re-discover the server first."""
    await mongo.orders.insert_one(ORDER)
    await fail_point.arm({"times": 1}, failCommands=["find"], errorCode=91,
                         appName=settings.mongo.app_name)  # fmt: skip
    assert (await client.get("/orders/o1")).status == 200
    assert retries(client) == 1


async def test_more_failures_than_tries_is_503_within_the_deadline(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    await mongo.orders.insert_one(ORDER)
    await fail_point.arm("alwaysOn", failCommands=["find"], errorCode=9001,
                         appName=settings.mongo.app_name)  # fmt: skip
    started = time.monotonic()
    response = await client.get("/orders/o1")
    elapsed = time.monotonic() - started
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.content_type == "application/problem+json"
    assert retries(client) == settings.retry.max_tries - 1
    assert elapsed < settings.request.deadline_seconds + 1


async def test_non_transient_errors_are_not_retried(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings,
    recorder: CommandRecorder,
) -> None:  # fmt: skip
    await mongo.orders.insert_one(ORDER)
    await fail_point.arm({"times": 1}, failCommands=["find"], errorCode=2,  # BadValue
                         appName=settings.mongo.app_name)  # fmt: skip
    recorder.clear()
    response = await client.get("/orders/o1")
    assert response.status == 500
    assert "BadValue" not in await response.text()
    assert retries(client) == 0
    assert recorder.started_names() == ["find"]


@pytest.fixture
def tight_settings(settings: Settings) -> Settings:
    """A 1 s deadline with driver timeouts inside it, so hang tests stay short."""
    return dataclasses.replace(
        settings,
        request=dataclasses.replace(settings.request, deadline_seconds=1.0),
        mongo=dataclasses.replace(settings.mongo, socket_timeout_ms=400),
    )


async def test_a_blocked_connection_gets_503_in_time(
    aiohttp_client: AiohttpClient, tight_settings: Settings, mongo: Mongo, fail_point: FailPoint
) -> None:
    await mongo.orders.insert_one(ORDER)
    client = await aiohttp_client(create_app(tight_settings))
    await fail_point.arm({"times": 5}, failCommands=["find"], blockConnection=True,
                         blockTimeMS=3000, appName=tight_settings.mongo.app_name)  # fmt: skip
    started = time.monotonic()
    response = await client.get("/orders/o1")
    elapsed = time.monotonic() - started
    assert response.status == 503
    assert elapsed < tight_settings.request.deadline_seconds + 0.75


async def test_insert_applied_but_reply_lost_creates_exactly_one(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    """The server applies the insert, then reports a retryable write-concern failure."""
    user = await (await client.post("/users", json={"name": "A", "email": "a@example.com"})).json()
    await fail_point.arm({"times": 1}, failCommands=["insert"],
                         writeConcernError={"code": 91, "errmsg": "shutting down"},
                         errorLabels=["RetryableWriteError"],
                         appName=settings.mongo.app_name)  # fmt: skip
    response = await client.post(f"/users/{user['id']}/orders", json={"amount": 7})
    assert response.status == 201
    assert await mongo.orders.count_documents({"user_id": user["id"]}) == 1
    assert retries(client) == 1


async def test_update_applied_but_reply_lost_applies_once(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    user = await (await client.post("/users", json={"name": "A", "email": "a@example.com"})).json()
    await fail_point.arm({"times": 1}, failCommands=["findAndModify"],
                         writeConcernError={"code": 91, "errmsg": "shutting down"},
                         errorLabels=["RetryableWriteError"],
                         appName=settings.mongo.app_name)  # fmt: skip
    response = await client.patch(f"/users/{user['id']}", json={"name": "B"})
    assert response.status == 200
    assert (await response.json())["name"] == "B"
    stored = await mongo.users.find_one({"_id": user["id"]})
    assert stored is not None
    assert stored["version"] == 1  # one logical write, one increment
    assert retries(client) == 1


async def test_delete_applied_but_reply_lost_is_still_204(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    user = await (await client.post("/users", json={"name": "A", "email": "a@example.com"})).json()
    await fail_point.arm({"times": 1}, failCommands=["delete"],
                         writeConcernError={"code": 91, "errmsg": "shutting down"},
                         errorLabels=["RetryableWriteError"],
                         appName=settings.mongo.app_name)  # fmt: skip
    response = await client.delete(f"/users/{user['id']}")
    assert response.status == 204
    assert await mongo.users.count_documents({"_id": user["id"]}) == 0


def test_classification() -> None:
    from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

    assert is_transient(AutoReconnect("x"))
    assert is_transient(OperationFailure("x", code=11600))
    assert not is_transient(OperationFailure("x", code=2))
    assert not is_transient(DuplicateKeyError("x", code=11000))
    labels = {"errorLabels": ["TransientTransactionError"]}
    labelled = OperationFailure("x", code=112, details=labels)
    assert is_transient(labelled)


async def _client_on(
    aiohttp_client: AiohttpClient, settings: Settings, server: MongoServer
) -> Client:
    mongo = dataclasses.replace(settings.mongo, url=server.url)
    return await ready_client(
        aiohttp_client, create_app(dataclasses.replace(settings, mongo=mongo))
    )


async def _new_user_path(client: Client) -> str:
    created = await client.post("/users", json={"name": "A", "email": "a@example.com"})
    assert created.status == 201
    return f"/users/{(await created.json())['id']}"


async def test_database_down_is_fast_503_and_recovers_without_restart(
    aiohttp_client: AiohttpClient, settings: Settings, own_mongo_server: MongoServer
) -> None:
    client = await _client_on(aiohttp_client, settings, own_mongo_server)
    path = await _new_user_path(client)
    own_mongo_server.stop()
    started = time.monotonic()
    down = await client.get(path)
    assert down.status == 503
    assert time.monotonic() - started < settings.request.deadline_seconds + 0.5
    assert (await client.get("/health/ready")).status == 503
    own_mongo_server.start()

    async def serving() -> bool:
        return (await client.get(path)).status == 200

    await wait_until(serving, timeout=10)
    assert (await client.get("/health/ready")).status == 200


async def test_restart_under_load_gives_only_200s_and_503s(
    aiohttp_client: AiohttpClient, settings: Settings, own_mongo_server: MongoServer
) -> None:
    client = await _client_on(aiohttp_client, settings, own_mongo_server)
    path = await _new_user_path(client)
    statuses: list[int] = []
    slowest = 0.0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.monotonic()
            statuses.append((await client.get(path)).status)
            slowest = max(slowest, time.monotonic() - started)

    workers = [asyncio.create_task(load()) for _ in range(8)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_mongo_server.restart)
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*workers)
    assert set(statuses) <= {200, 503}
    assert 200 in statuses
    assert slowest < settings.request.deadline_seconds + 1
    recent = await asyncio.gather(*(client.get(path) for _ in range(10)))
    assert {r.status for r in recent} == {200}


@pytest.mark.one_driver
async def test_each_operation_builds_its_retrier_once_and_reads_settings_per_call(
    settings: Settings,
) -> None:
    """The retrying wrapper is built once per operation (building it per call cost CPU on
    every miss), yet a changed policy still governs the next call."""
    fast = dataclasses.replace(settings.retry, base_ms=1, cap_ms=1, max_tries=2)
    policy = retry_policy(fast, settings.mongo)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls % 3:
            raise AutoReconnect("transient")
        return "done"

    with pytest.raises(Unavailable):
        await call_with_retries(policy, "op", flaky)  # two tries, both transient: 503
    assert calls == 2
    first = policy.retrier("op")
    policy.settings = dataclasses.replace(fast, max_tries=3)
    calls = 0
    assert await call_with_retries(policy, "op", flaky) == "done"  # the third try lands
    assert calls == 3
    assert policy.retrier("op") is first
    assert policy.counts[("op", "AutoReconnect")] == 3


@pytest.mark.one_driver
async def test_a_first_try_that_lands_goes_without_backoff(settings: Settings) -> None:
    """backoff's wrapper cost more per call than a query's own Python work: a call whose
    first try lands must not build or enter it; a failed first try still counts as a try."""
    fast = dataclasses.replace(settings.retry, base_ms=1, cap_ms=1, max_tries=1)
    policy = retry_policy(fast, settings.mongo)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AutoReconnect("transient")
        return "done"

    async def fine() -> str:
        return "fine"

    assert await call_with_retries(policy, "op", fine) == "fine"
    assert "op" not in policy._retriers
    with pytest.raises(Unavailable):  # one try allowed: the failed first try was it
        await call_with_retries(policy, "op", flaky)
    assert calls == 1
    assert "op" in policy._retriers
