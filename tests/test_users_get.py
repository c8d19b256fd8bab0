"""GET /users/{user_id}: the user and their order history, fetched concurrently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.settings.model import Settings
from service.storage.mongo import Mongo
from tests.helpers.app import Client
from tests.helpers.mongo import CommandRecorder, FailPoint

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _insert_user(mongo: Mongo, user_id: str = "u1", orders: int = 3) -> None:
    await mongo.users.insert_one(
        {"_id": user_id, "name": "Ada", "email": f"{user_id}@example.com",
         "created_at": T0, "updated_at": T0}
    )  # fmt: skip
    if orders:
        await mongo.orders.insert_many(
            [
                {"_id": f"{user_id}-o{i:03d}", "user_id": user_id, "amount": 100 + i,
                 "currency": "EUR", "items": [], "created_at": T0 + timedelta(minutes=i)}
                for i in range(orders)
            ]
        )  # fmt: skip


async def test_returns_user_and_orders_newest_first(client: Client, mongo: Mongo) -> None:
    await _insert_user(mongo, orders=3)
    await mongo.orders.insert_one(
        {"_id": "other", "user_id": "u2", "amount": 1, "currency": "EUR", "items": [],
         "created_at": T0}
    )  # fmt: skip
    response = await client.get("/users/u1")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["user"] == {
        "id": "u1",
        "name": "Ada",
        "email": "u1@example.com",
        "created_at": "2026-03-01T12:00:00.000Z",
        "updated_at": "2026-03-01T12:00:00.000Z",
    }
    assert [order["id"] for order in body["orders"]] == ["u1-o002", "u1-o001", "u1-o000"]
    assert body["orders"][0] == {
        "id": "u1-o002",
        "user_id": "u1",
        "amount": 102,
        "currency": "EUR",
        "items": [],
        "created_at": "2026-03-01T12:02:00.000Z",
    }


async def test_order_history_is_capped_at_the_100_newest(client: Client, mongo: Mongo) -> None:
    await _insert_user(mongo, orders=105)
    body = await (await client.get("/users/u1")).json()
    assert len(body["orders"]) == 100
    assert body["orders"][0]["id"] == "u1-o104"
    assert body["orders"][-1]["id"] == "u1-o005"


async def test_user_without_orders(client: Client, mongo: Mongo) -> None:
    await _insert_user(mongo, orders=0)
    body = await (await client.get("/users/u1")).json()
    assert body["orders"] == []


async def test_unknown_user_is_404_problem(client: Client) -> None:
    response = await client.get("/users/nobody")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"


async def test_impossible_ids_are_404_without_a_query(
    client: Client, recorder: CommandRecorder
) -> None:
    recorder.clear()
    for bad in ("$where", "a" * 65, "a.b", "%24ne"):
        response = await client.get(f"/users/{bad}")
        assert response.status == 404, bad
    assert recorder.started_names() == []


async def test_both_queries_are_in_flight_at_once(
    client: Client, mongo: Mongo, recorder: CommandRecorder, fail_point: FailPoint,
    settings: Settings,
) -> None:  # fmt: skip
    """Each find is held 300 ms by the server: run one after the other, the first would
    finish before the second starts; run together, both start before either finishes."""
    await _insert_user(mongo)
    await fail_point.arm(
        {"times": 2},
        failCommands=["find"],
        blockConnection=True,
        blockTimeMS=300,
        appName=settings.mongo.app_name,
    )
    recorder.clear()
    response = await client.get("/users/u1")
    assert response.status == 200
    finds = [(kind, request_id) for kind, name, request_id in recorder.events if name == "find"]
    assert [kind for kind, _ in finds] == ["started", "started", "succeeded", "succeeded"]
