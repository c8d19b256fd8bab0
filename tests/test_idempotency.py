"""Idempotency-Key under faults: a key is never stuck, and a write is never doubled.

A write can land after the attempt that sent it was given up: the server was stalled past
the socket timeout and the request answered 503 at its deadline. A retry with the same key
must then get the write that landed (or make the one write itself), never a 409 forever.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.settings.model import Settings
from service.storage.mongo import Mongo
from tests.helpers.app import Client
from tests.helpers.mongo import FailPoint

BODY_USER = {"name": "Ada", "email": "ada@example.com"}


async def _retry_until_answered(
    client: Client, path: str, body: dict[str, Any], key: str, seconds: float = 20.0
) -> tuple[int, Any, list[int]]:
    """POST like a careful client: the same key again on 503, until another answer comes."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    while True:
        response = await client.post(path, json=body, headers={"Idempotency-Key": key})
        statuses.append(response.status)
        if response.status != 503 or time.monotonic() > deadline:
            return response.status, await response.json(), statuses
        assert "Retry-After" in response.headers
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("collection", ["users", "orders"])
@pytest.mark.parametrize("retry", ["at once", "after it landed"])
async def test_a_write_that_lands_after_its_request_gave_up_is_the_retrys_answer(
    client: Client,
    mongo: Mongo,
    fail_point: FailPoint,
    settings: Settings,
    collection: str,
    retry: str,
) -> None:
    path, body = "/users", dict[str, Any](BODY_USER)
    if collection == "orders":
        user = await (await client.post("/users", json={"name": "B", "email": "b@x.io"})).json()
        path, body = f"/users/{user['id']}/orders", {"amount": 7}
    stored = mongo.client[settings.mongo.database][collection]
    before = await stored.count_documents({})
    stall_ms = int(settings.request.deadline_seconds * 1000) + 500  # past the deadline
    await fail_point.arm("alwaysOn", failCommands=["insert"], blockConnection=True,
                         blockTimeMS=stall_ms, appName=settings.mongo.app_name)  # fmt: skip
    first = await client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status == 503
    await fail_point.off()
    if retry != "at once":  # else the retry races the stalled insert, as a client's may
        await asyncio.sleep(stall_ms / 1000 + 1)
    status, created, statuses = await _retry_until_answered(client, path, body, "k-1")
    assert (status, 409 in statuses) == (201, False), statuses
    await asyncio.sleep(stall_ms / 1000 + 1)  # anything still stalled has landed by now
    assert await stored.count_documents({}) == before + 1
    assert await stored.count_documents({"_id": created["id"]}) == 1
    again = await client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert (again.status, await again.json()) == (201, created)


async def test_an_attempt_that_failed_before_answering_is_not_doubled(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    user = await (await client.post("/users", json={"name": "B", "email": "b@x.io"})).json()
    path = f"/users/{user['id']}/orders"
    await fail_point.arm("alwaysOn", failCommands=["find"], errorCode=11600,
                         appName=settings.mongo.app_name)  # fmt: skip
    first = await client.post(path, json={"amount": 8}, headers={"Idempotency-Key": "k-2"})
    assert first.status == 503
    await fail_point.off()
    status, created, statuses = await _retry_until_answered(client, path, {"amount": 8}, "k-2")
    assert (status, 409 in statuses) == (201, False), statuses
    assert [o["_id"] for o in await mongo.orders.find({}).to_list(None)] == [created["id"]]


async def test_an_order_stored_before_the_failure_is_the_retrys_answer(
    client: Client, mongo: Mongo, fail_point: FailPoint, settings: Settings
) -> None:
    """The order is stored, then the database fails before the answer: the retry gets it,
    and the aggregate shows it (the first attempt never reached its cache invalidation)."""
    user = await (await client.post("/users", json={"name": "B", "email": "b@x.io"})).json()
    path = f"/users/{user['id']}/orders"
    assert (await client.get(f"/users/{user['id']}")).status == 200
    # The key's lookup passes; the user check after the insert fails, on every try.
    await fail_point.arm({"skip": 1}, failCommands=["find"], errorCode=11600,
                         appName=settings.mongo.app_name)  # fmt: skip
    first = await client.post(path, json={"amount": 9}, headers={"Idempotency-Key": "k-3"})
    assert first.status == 503
    assert await mongo.orders.count_documents({}) == 1
    await fail_point.off()
    status, created, statuses = await _retry_until_answered(client, path, {"amount": 9}, "k-3")
    assert (status, 409 in statuses) == (201, False), statuses
    stored = await mongo.orders.find({}).to_list(None)
    assert [(o["_id"], o["amount"]) for o in stored] == [(created["id"], 9)]
    aggregate = await (await client.get(f"/users/{user['id']}")).json()
    assert [order["id"] for order in aggregate["orders"]] == [created["id"]]


async def test_a_key_reused_with_another_body_is_422_even_after_a_fault(
    client: Client, mongo: Mongo
) -> None:
    first = await client.post("/users", json=BODY_USER, headers={"Idempotency-Key": "k-4"})
    assert first.status == 201
    other = await client.post(
        "/users", json={**BODY_USER, "name": "Eve"}, headers={"Idempotency-Key": "k-4"}
    )
    assert other.status == 422
    assert await mongo.users.count_documents({}) == 1
