"""Conditional requests per RFC 9110 §13: If-Match, If-None-Match, and malformed ones.

- If-Match compares strongly (weak tags never match), `*` means "exists".
- If-None-Match compares weakly; on GET/HEAD a match is 304, on writes 412; `*` means "any
  current representation", so `If-None-Match: *` on PATCH or DELETE of an existing user is
  412 (§13.1.2), and nothing changes.
- A header that is not an entity-tag list (§8.8.3: quoted, optionally W/-prefixed, comma
  separated; or `*` alone), or is empty, is a client error: 400 problem+json naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.storage.mongo import Mongo
from tests.helpers.api import PROBLEM, checked
from tests.helpers.app import Client
from tests.helpers.http import curl, exchange


async def _user(client: Client) -> tuple[dict[str, Any], str]:
    response = await client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    assert response.status == 201
    user: dict[str, Any] = await response.json()
    etag = (await client.get(f"/users/{user['id']}")).headers["ETag"]
    return user, etag


async def _stored_name(mongo: Mongo, user_id: str) -> str | None:
    document = await mongo.users.find_one({"_id": user_id})
    return None if document is None else str(document["name"])


async def test_if_none_match_star_refuses_writes_to_an_existing_user(
    client: Client, mongo: Mongo
) -> None:
    user, _ = await _user(client)
    url = f"/users/{user['id']}"
    patched = await client.patch(url, json={"name": "Eve"}, headers={"If-None-Match": "*"})
    assert patched.status == 412
    problem = await checked(patched, "PATCH", "/users/{user_id}")
    assert "If-None-Match" in problem["detail"]
    assert await _stored_name(mongo, user["id"]) == "Ada"
    deleted = await client.delete(url, headers={"If-None-Match": "*"})
    assert deleted.status == 412
    await checked(deleted, "DELETE", "/users/{user_id}")
    assert await _stored_name(mongo, user["id"]) == "Ada"
    # A missing user is still a 404, whatever the precondition.
    star = {"If-None-Match": "*"}
    missing = await client.patch("/users/nobody", json={"name": "x"}, headers=star)
    assert missing.status == 404


async def test_if_none_match_on_writes_compares_weakly(client: Client, mongo: Mongo) -> None:
    user, etag = await _user(client)
    url = f"/users/{user['id']}"
    for held in (etag, f"W/{etag}", f'"other", {etag}'):
        refused = await client.patch(url, json={"name": "Eve"}, headers={"If-None-Match": held})
        assert refused.status == 412, held
    assert await _stored_name(mongo, user["id"]) == "Ada"
    fine = await client.patch(url, json={"name": "Eve"}, headers={"If-None-Match": '"u1-999"'})
    assert fine.status == 200
    assert await _stored_name(mongo, user["id"]) == "Eve"
    both = await client.patch(
        url, json={"name": "Bob"}, headers={"If-Match": fine.headers["ETag"], "If-None-Match": etag}
    )
    assert both.status == 200  # the current tag matches If-Match, and is not the one held


@pytest.mark.parametrize(
    "value",
    ["", "u1-1", '"u1-1', 'u1-1"', '"u1-1" "u1-2"', '*, "u1-1"', "W/", 'w/"u1-1"', '"a"b"', ", ,"],
)
async def test_malformed_if_match_is_400_and_changes_nothing(
    client: Client, mongo: Mongo, value: str
) -> None:
    user, _ = await _user(client)
    url = f"/users/{user['id']}"
    port = client.port
    assert port is not None
    for method, body in (("PATCH", b'{"name": "Eve"}'), ("DELETE", b"")):
        headers = {"If-Match": value, "Content-Type": "application/json"}
        response = await exchange(port, method, url, headers, body)
        assert response.status == 400, (method, value)
        assert response.headers["Content-Type"] == PROBLEM
        assert b"If-Match" in response.body
        assert b"changed" not in response.body  # not the stale-ETag message
    assert await _stored_name(mongo, user["id"]) == "Ada"


async def test_malformed_if_none_match_is_400(client: Client) -> None:
    user, _ = await _user(client)
    for value in ("", "u1-1", '"u1-1'):
        response = await client.get(f"/users/{user['id']}", headers={"If-None-Match": value})
        assert response.status == 400, value
        problem = await checked(response, "GET", "/users/{user_id}")
        assert [error["pointer"] for error in problem["errors"]] == ["If-None-Match"]


async def test_get_if_none_match_with_lists_and_weak_tags(client: Client) -> None:
    user, etag = await _user(client)
    url = f"/users/{user['id']}"
    for held in (etag, f"W/{etag}", f'"a", W/"b",{etag}', f'"a" ,\t{etag}', "*"):
        response = await client.get(url, headers={"If-None-Match": held})
        assert response.status == 304, held
        assert response.headers["ETag"] == etag
        assert await response.read() == b""
    fresh = await client.get(url, headers={"If-None-Match": '"a", W/"b"'})
    assert fresh.status == 200


async def test_if_match_compares_strongly_and_star_means_exists(client: Client) -> None:
    user, etag = await _user(client)
    url = f"/users/{user['id']}"
    weak = await client.patch(url, json={"name": "Eve"}, headers={"If-Match": f"W/{etag}"})
    assert weak.status == 412
    listed = await client.patch(url, json={"name": "Eve"}, headers={"If-Match": f'"x", {etag}'})
    assert listed.status == 200
    star = await client.delete(url, headers={"If-Match": "*"})
    assert star.status == 204
    assert (await client.delete(url, headers={"If-Match": "*"})).status == 404


async def test_curl_conditional_get_round_trip(client: Client, tmp_path: Path) -> None:
    """curl's own ETag handling (--etag-save, --etag-compare), with and without gzip."""
    user, _ = await _user(client)
    for n in range(8):  # enough orders for the body to be compressed
        await client.post(f"/users/{user['id']}/orders", json={"amount": n + 1})
    url = str(client.make_url(f"/users/{user['id']}"))
    for extra in ((), ("--compressed",)):
        saved = tmp_path / "etag.txt"
        first = await curl(tmp_path, url, "--etag-save", str(saved), *extra)
        assert first.returncode == 0, first.stderr
        assert first.status == 200
        assert first.headers.get("Content-Encoding") == ("gzip" if extra else None)
        assert saved.read_text().strip() == first.headers["ETag"]
        again = await curl(tmp_path, url, "--etag-compare", str(saved), *extra)
        assert again.status == 304, extra
        assert again.body == b""
        assert again.headers["ETag"] == first.headers["ETag"]
    patched = await client.patch(f"/users/{user['id']}", json={"name": "Grace"})
    assert patched.status == 200
    changed = await curl(tmp_path, url, "--etag-compare", str(tmp_path / "etag.txt"))
    assert changed.status == 200
