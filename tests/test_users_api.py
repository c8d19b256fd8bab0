"""The users contract: create, page, patch, delete, conditional requests, strict input."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest

from service.storage.mongo import Mongo
from tests.helpers.api import JSON, checked, create_user
from tests.helpers.app import Client
from tests.helpers.mongo import CommandRecorder


async def test_create_user(client: Client, mongo: Mongo) -> None:
    response = await client.post("/users", json={"name": "  Ada  ", "email": "Ada@Example.COM"})
    assert response.status == 201
    user = await checked(response, "POST", "/users")
    assert response.headers["Location"] == f"/users/{user['id']}"
    assert user["name"] == "Ada"
    assert user["email"] == "ada@example.com"  # stored normalised
    assert user["created_at"] == user["updated_at"]
    assert set(user) == {"id", "name", "email", "created_at", "updated_at"}
    stored = await mongo.users.find_one({"_id": user["id"]})
    assert stored is not None
    assert stored["email"] == "ada@example.com"
    aggregate = await checked(await client.get(user_location(user)), "GET", "/users/{user_id}")
    assert aggregate == {"user": user, "orders": []}


def user_location(user: dict[str, Any]) -> str:
    return f"/users/{user['id']}"


async def test_duplicate_email_is_409_case_insensitively(client: Client, mongo: Mongo) -> None:
    await create_user(client, email="grace@example.com")
    response = await client.post("/users", json={"name": "G", "email": "GRACE@example.com"})
    assert response.status == 409
    await checked(response, "POST", "/users")
    assert await mongo.users.count_documents({}) == 1


async def test_a_trailing_newline_does_not_make_a_second_email(
    client: Client, mongo: Mongo
) -> None:
    await create_user(client, email="grace@example.com")
    response = await client.post("/users", json={"name": "G", "email": "grace@example.com\n"})
    assert response.status == 400
    problem = await checked(response, "POST", "/users")
    assert [error["pointer"] for error in problem["errors"]] == ["/email"]
    assert await mongo.users.count_documents({}) == 1


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"name": "", "email": "x@example.com"}, ["/name"]),
        ({"name": "   ", "email": "x@example.com"}, ["/name"]),
        ({"name": "a" * 101, "email": "x@example.com"}, ["/name"]),
        ({"name": "ok", "email": "not-an-email"}, ["/email"]),
        ({"name": "ok", "email": "a" * 250 + "@example.com"}, ["/email"]),
        ({"name": "ok", "email": {"$ne": None}}, ["/email"]),
        ({"name": None, "email": None}, ["/name", "/email"]),
        ({"name": 5, "email": ["x@example.com"], "admin": True}, ["/admin", "/name", "/email"]),
        ({}, ["/name", "/email"]),
        ({"name": "ok", "email": "x@example.com", "extra.field": 1}, ["/extra.field"]),
    ],
)
async def test_invalid_users_are_400_naming_every_field(
    client: Client,
    mongo: Mongo,
    recorder: CommandRecorder,
    body: dict[str, Any],
    pointers: list[str],
) -> None:
    recorder.clear()
    response = await client.post("/users", json=body)
    assert response.status == 400
    problem = await checked(response, "POST", "/users")
    assert sorted(error["pointer"] for error in problem["errors"]) == sorted(pointers)
    assert recorder.started_names() == []  # nothing read or written
    assert await mongo.users.count_documents({}) == 0


async def test_name_of_100_characters_after_trimming_is_accepted(client: Client) -> None:
    user = await create_user(client, name="  " + "n" * 100 + "  ")
    assert user["name"] == "n" * 100


@pytest.mark.parametrize(
    ("data", "headers", "status"),
    [
        (b'{"name": "a", "email": "a@example.com"}', {"Content-Type": "text/plain"}, 415),
        (b'{"name": "a", "email": "a@example.com"}', {}, 415),
        (b'{"name": "a",', JSON, 400),
        (b"[1, 2]", JSON, 400),
        (b'"just a string"', JSON, 400),
        (b'{"name": "\xff\xfe", "email": "a@example.com"}', JSON, 400),
        (b"[" * 50_000 + b"]" * 10, JSON, 400),
        (b'{"name": "' + b"a" * 70_000 + b'", "email": "a@example.com"}', JSON, 413),
        (b"this is not gzip", {**JSON, "Content-Encoding": "gzip"}, 400),  # was a 500
        (
            gzip.compress(b'{"name": "' + b"a" * 10_000_000 + b'"}'),
            {**JSON, "Content-Encoding": "gzip"},
            413,
        ),  # 10 KB that inflate to 10 MB
    ],
)
async def test_bad_bodies(
    client: Client, mongo: Mongo, data: bytes, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/users", data=data, headers=headers)
    assert response.status == status
    await checked(response, "POST", "/users")
    assert await mongo.users.count_documents({}) == 0


async def test_paging_is_stable_and_complete(client: Client) -> None:
    created = [await create_user(client, name=f"U{i}", email=f"u{i}@example.com") for i in range(7)]
    seen: list[str] = []
    url = "/users?limit=3"
    pages = 0
    while True:
        page = await checked(await client.get(url), "GET", "/users")
        pages += 1
        seen.extend(user["id"] for user in page["items"])
        if page["next"] is None:
            break
        url = f"/users?limit=3&after={page['next']}"
    assert pages == 3
    assert seen == sorted(user["id"] for user in created)
    default = await checked(await client.get("/users"), "GET", "/users")
    assert len(default["items"]) == 7
    assert default["next"] is None


BAD_PAGING = ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5",
              "after=garbage", "after=eyJpZCI6IngifQ.AAAA", "after="]  # fmt: skip


@pytest.mark.parametrize("query", BAD_PAGING)
async def test_bad_paging_parameters_are_400(client: Client, query: str) -> None:
    response = await client.get(f"/users?{query}")
    assert response.status == 400
    await checked(response, "GET", "/users")


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("name=Ada", [("name", "unknown parameter")]),
        ("limit[$gt]=0", [("limit[$gt]", "unknown parameter")]),
        ("limit=5&limit=100", [("limit", "given more than once")]),
        (
            "after=a&after=b&sort=-id",
            [("sort", "unknown parameter"), ("after", "given more than once")],
        ),
    ],
)
async def test_unknown_and_repeated_paging_parameters_are_400(
    client: Client, recorder: CommandRecorder, query: str, errors: list[tuple[str, str]]
) -> None:
    """A filter the service lacks must not answer with an unfiltered page."""
    recorder.clear()
    for path, template in (("/users", "/users"), ("/users/u1/orders", "/users/{user_id}/orders")):
        response = await client.get(f"{path}?{query}")
        assert response.status == 400
        problem = await checked(response, "GET", template)
        assert [(e["pointer"], e["detail"]) for e in problem["errors"]] == errors
    assert recorder.started_names() == []


async def test_tampered_cursor_is_400(client: Client) -> None:
    for i in range(3):
        await create_user(client, name=f"U{i}", email=f"u{i}@example.com")
    cursor = (await (await client.get("/users?limit=1")).json())["next"]
    payload, mac = cursor.split(".")
    flipped = ("A" if payload[0] != "A" else "B") + payload[1:]
    assert (await client.get(f"/users?after={flipped}.{mac}")).status == 400
    assert (await client.get(f"/users?after={cursor}")).status == 200


async def test_patch_changes_only_what_is_sent(client: Client) -> None:
    user = await create_user(client)
    response = await client.patch(user_location(user), json={"name": "Countess"})
    assert response.status == 200
    updated = await checked(response, "PATCH", "/users/{user_id}")
    assert updated["name"] == "Countess"
    assert updated["email"] == user["email"]
    assert updated["created_at"] == user["created_at"]
    assert updated["updated_at"] >= user["updated_at"]
    changed = await client.patch(user_location(user), json={"email": "New@Example.com"})
    assert (await changed.json())["email"] == "new@example.com"


async def test_patch_errors(client: Client) -> None:
    user = await create_user(client)
    await create_user(client, name="Other", email="taken@example.com")
    cases = [
        ({}, 400),
        ({"email": "taken@example.com"}, 409),
        ({"email": "TAKEN@example.com"}, 409),
        ({"name": None}, 400),
        ({"id": "x"}, 400),
    ]
    for body, status in cases:
        response = await client.patch(user_location(user), json=body)
        assert response.status == status, body
        await checked(response, "PATCH", "/users/{user_id}")
    missing = await client.patch("/users/nobody", json={"name": "x"})
    assert missing.status == 404
    unchanged = await (await client.get(user_location(user))).json()
    assert unchanged["user"] == user


async def test_delete_cascades_to_orders(client: Client, mongo: Mongo) -> None:
    user = await create_user(client)
    other = await create_user(client, name="Other", email="other@example.com")
    for owner in (user, other):
        response = await client.post(f"/users/{owner['id']}/orders", json={"amount": 100})
        assert response.status == 201
    response = await client.delete(user_location(user))
    assert response.status == 204
    assert await response.read() == b""
    assert (await client.get(user_location(user))).status == 404
    assert await mongo.orders.count_documents({"user_id": user["id"]}) == 0
    assert await mongo.orders.count_documents({"user_id": other["id"]}) == 1
    again = await client.delete(user_location(user))
    assert again.status == 404
    await checked(again, "DELETE", "/users/{user_id}")


async def test_etag_and_if_none_match(client: Client) -> None:
    user = await create_user(client)
    first = await client.get(user_location(user))
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    not_modified = await client.get(user_location(user), headers={"If-None-Match": etag})
    assert not_modified.status == 304
    assert await not_modified.read() == b""
    assert not_modified.headers["ETag"] == etag
    other = await client.get(user_location(user), headers={"If-None-Match": '"nope", W/' + etag})
    assert other.status == 304  # If-None-Match compares weakly
    await client.post(f"/users/{user['id']}/orders", json={"amount": 5})
    after_order = await client.get(user_location(user), headers={"If-None-Match": etag})
    assert after_order.status == 200  # a new order changed the representation
    assert after_order.headers["ETag"] != etag


async def test_if_match_guards_patch_and_delete(client: Client, mongo: Mongo) -> None:
    user = await create_user(client)
    etag = (await client.get(user_location(user))).headers["ETag"]
    stale = await client.patch(
        user_location(user), json={"name": "B"}, headers={"If-Match": '"u1-99"'}
    )
    assert stale.status == 412
    await checked(stale, "PATCH", "/users/{user_id}")
    assert (await mongo.users.find_one({"_id": user["id"]}) or {})["name"] == user["name"]
    ok = await client.patch(user_location(user), json={"name": "B"}, headers={"If-Match": etag})
    assert ok.status == 200
    new_etag = ok.headers["ETag"]
    assert new_etag != etag
    assert (await client.get(user_location(user))).headers["ETag"] == new_etag
    weak = await client.delete(user_location(user), headers={"If-Match": f"W/{new_etag}"})
    assert weak.status == 412  # If-Match compares strongly
    old = await client.delete(user_location(user), headers={"If-Match": etag})
    assert old.status == 412
    assert await mongo.users.count_documents({"_id": user["id"]}) == 1
    gone = await client.delete(user_location(user), headers={"If-Match": new_etag})
    assert gone.status == 204
    assert (await client.delete(user_location(user), headers={"If-Match": "*"})).status == 404


async def test_concurrent_conditional_patches_let_exactly_one_win(client: Client) -> None:
    user = await create_user(client)
    etag = (await client.get(user_location(user))).headers["ETag"]
    responses = await asyncio.gather(
        *(
            client.patch(user_location(user), json={"name": f"N{i}"}, headers={"If-Match": etag})
            for i in range(8)
        )
    )
    assert sorted(r.status for r in responses) == [200] + [412] * 7


async def test_operator_and_odd_path_ids_never_reach_the_database(
    client: Client, recorder: CommandRecorder
) -> None:
    recorder.clear()
    for path in ("/users/$where", "/users/%7B%22$ne%22:1%7D", "/users/a.b", "/orders/$gt",
                 "/users/" + "x" * 65 + "/orders"):  # fmt: skip
        assert (await client.get(path)).status == 404, path
    assert (await client.patch("/users/$where", json={"name": "x"})).status == 404
    assert (await client.delete("/users/$ne")).status == 404
    assert recorder.started_names() == []
