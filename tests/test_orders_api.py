"""The orders contract, idempotent creation, and the published OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from service.http.routes import ENDPOINTS
from service.storage.mongo import Mongo
from tests.helpers.api import DOCUMENT, checked, create_user, place_order
from tests.helpers.app import Client
from tests.helpers.mongo import CommandRecorder


async def test_create_and_read_an_order(client: Client) -> None:
    user = await create_user(client)
    body = {"amount": 1999, "currency": "EUR", "items": [{"sku": "BOOK-1", "quantity": 2}]}
    response = await client.post(f"/users/{user['id']}/orders", json=body)
    assert response.status == 201
    order = await checked(response, "POST", "/users/{user_id}/orders")
    assert response.headers["Location"] == f"/orders/{order['id']}"
    assert {k: order[k] for k in ("user_id", "amount", "currency", "items")} == {
        "user_id": user["id"], **body,
    }  # fmt: skip
    fetched = await client.get(f"/orders/{order['id']}")
    assert await checked(fetched, "GET", "/orders/{order_id}") == order
    etag = fetched.headers["ETag"]
    cached = await client.get(f"/orders/{order['id']}", headers={"If-None-Match": etag})
    assert cached.status == 304
    aggregate = await (await client.get(f"/users/{user['id']}")).json()
    assert aggregate["orders"] == [order]


async def test_defaults_and_bounds(client: Client) -> None:
    user = await create_user(client)
    order = await place_order(client, user["id"], {"amount": 10**12})
    assert order["currency"] == "USD"
    assert order["items"] == []


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"amount": 0}, ["/amount"]),
        ({"amount": 10**12 + 1}, ["/amount"]),
        ({"amount": 1.5}, ["/amount"]),
        ({"amount": "100"}, ["/amount"]),
        ({"amount": True}, ["/amount"]),
        ({"amount": 5, "currency": "usd"}, ["/currency"]),
        ({"amount": 5, "currency": "EURO"}, ["/currency"]),
        ({"amount": 5, "items": [{"sku": "", "quantity": 1}]}, ["/items/0/sku"]),
        ({"amount": 5, "items": [{"sku": "A", "quantity": 10_001}]}, ["/items/0/quantity"]),
        ({"amount": 5, "items": [{"sku": "A", "quantity": 1, "price": 3}]}, ["/items/0"]),
        ({"amount": 5, "items": [{"sku": "A", "quantity": 1}] * 101}, ["/items"]),
        ({"amount": {"$gt": 0}, "user_id": "someone-else"}, ["/amount", "/user_id"]),
        ({}, ["/amount"]),
    ],
)
async def test_invalid_orders_are_400(
    client: Client, mongo: Mongo, body: dict[str, Any], pointers: list[str]
) -> None:
    user = await create_user(client)
    response = await client.post(f"/users/{user['id']}/orders", json=body)
    assert response.status == 400
    problem = await checked(response, "POST", "/users/{user_id}/orders")
    assert sorted(e["pointer"] for e in problem["errors"]) == sorted(pointers)
    assert await mongo.orders.count_documents({}) == 0


async def test_orders_for_unknown_users_are_404(client: Client, mongo: Mongo) -> None:
    response = await client.post("/users/nobody/orders", json={"amount": 5})
    assert response.status == 404
    await checked(response, "POST", "/users/{user_id}/orders")
    assert await mongo.orders.count_documents({}) == 0
    listing = await client.get("/users/nobody/orders")
    assert listing.status == 404
    assert (await client.get("/orders/nothing")).status == 404


async def test_order_pages_are_newest_first_and_complete(client: Client) -> None:
    user = await create_user(client)
    placed = [await place_order(client, user["id"], {"amount": 100 + i}) for i in range(7)]
    seen: list[dict[str, Any]] = []
    url = f"/users/{user['id']}/orders?limit=3"
    while url:
        page = await checked(await client.get(url), "GET", "/users/{user_id}/orders")
        seen.extend(page["items"])
        url = page["next"] and f"/users/{user['id']}/orders?limit=3&after={page['next']}"
    assert [o["id"] for o in seen] == [o["id"] for o in reversed(placed)]
    bad = await client.get(f"/users/{user['id']}/orders?after=abc.def")
    assert bad.status == 400


async def test_idempotent_user_creation(client: Client, mongo: Mongo) -> None:
    headers = {"Idempotency-Key": "create-ada-1"}
    body = {"name": "Ada", "email": "ada@example.com"}
    first = await client.post("/users", json=body, headers=headers)
    second = await client.post("/users", json=body, headers=headers)
    assert (first.status, second.status) == (201, 201)
    assert await first.json() == await second.json()
    assert second.headers["Location"] == first.headers["Location"]
    assert await mongo.users.count_documents({}) == 1
    reused = await client.post("/users", json={**body, "name": "Eve"}, headers=headers)
    assert reused.status == 422
    await checked(reused, "POST", "/users")
    assert await mongo.users.count_documents({}) == 1


async def test_idempotency_key_must_be_visible_ascii(client: Client) -> None:
    for key in ("", "a" * 256, "has space", "tab\tkey"):
        response = await client.post(
            "/users", json={"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": key}
        )
        assert response.status == 400, repr(key)


async def test_concurrent_repeats_create_exactly_one_order(client: Client, mongo: Mongo) -> None:
    user = await create_user(client)
    headers = {"Idempotency-Key": "order-42"}
    responses = await asyncio.gather(
        *(client.post(f"/users/{user['id']}/orders", json={"amount": 42}, headers=headers)
          for _ in range(10))
    )  # fmt: skip
    assert {r.status for r in responses} == {201}
    assert len({(await r.json())["id"] for r in responses}) == 1
    assert await mongo.orders.count_documents({"user_id": user["id"]}) == 1


async def test_failed_attempts_release_the_key(client: Client, mongo: Mongo) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    missing = await client.post("/users/ghost/orders", json={"amount": 1}, headers=headers)
    assert missing.status == 404
    assert await mongo.orders.count_documents({}) == 0
    user = await create_user(client)
    ok = await client.post(f"/users/{user['id']}/orders", json={"amount": 1}, headers=headers)
    assert ok.status == 201  # the same key on another user's route is another key


async def test_every_route_is_documented_and_every_document_path_is_served(
    client: Client,
) -> None:
    app: web.Application = client.app
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path) for path, ops in DOCUMENT["paths"].items() for method in ops
    }
    internal = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS if not endpoint.public}
    assert internal == {
        ("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/docs/{asset}"),
    }  # fmt: skip
    assert documented == served - internal
    published = await (await client.get("/openapi.json")).json()
    assert published == DOCUMENT
    assert published["openapi"].startswith("3.1")


async def test_operator_bodies_are_strings_or_rejected(
    client: Client, mongo: Mongo, recorder: CommandRecorder
) -> None:
    await create_user(client, email="victim@example.com")
    recorder.clear()
    attempts = [
        {"name": "x", "email": {"$ne": None}},
        {"name": {"$where": "1"}, "email": "a@example.com"},
        {"name": "x", "email": "a@example.com", "$set": {"email": "b"}},
    ]
    for body in attempts:
        assert (await client.post("/users", json=body)).status == 400
    assert recorder.started_names() == []
    assert await mongo.users.count_documents({}) == 1
