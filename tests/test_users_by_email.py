"""GET /users?email=: the one user with an address, through the unique index, in one query."""

from __future__ import annotations

import pytest

from tests.helpers.api import checked, create_user
from tests.helpers.app import Client
from tests.helpers.mongo import CommandRecorder


async def test_finds_the_user_case_insensitively_with_one_find_on_email(
    client: Client, recorder: CommandRecorder
) -> None:
    ada = await create_user(client, email="ada@example.com")
    await create_user(client, email="grace@example.com")
    recorder.clear()
    response = await client.get("/users", params={"email": "Ada@Example.COM"})
    assert response.status == 200
    body = await checked(response, "GET", "/users")
    assert body == {"items": [ada], "next": None}
    assert recorder.started_names() == ["find"]
    (command,) = recorder.commands
    assert command["filter"] == {"email": "ada@example.com"}


async def test_an_unknown_address_is_an_empty_page(client: Client) -> None:
    await create_user(client, email="ada@example.com")
    response = await client.get("/users", params={"email": "nobody@example.com", "limit": "5"})
    assert response.status == 200
    assert await checked(response, "GET", "/users") == {"items": [], "next": None}


async def test_limit_is_allowed_and_changes_nothing(client: Client) -> None:
    ada = await create_user(client, email="ada@example.com")
    response = await client.get("/users", params={"email": "ada@example.com", "limit": "1"})
    assert response.status == 200
    assert (await checked(response, "GET", "/users"))["items"] == [ada]


@pytest.mark.parametrize(
    "query",
    [
        {"email": ""},
        {"email": "not-an-address"},
        {"email": "ada@example.com\n"},
        {"email": "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"},  # over 254
        {"email": "ada@example.com", "after": "AAAA"},
        {"email": '{"$ne": null}'},
    ],
    ids=["empty", "malformed", "newline", "too long", "with after", "operator"],
)
async def test_bad_input_is_a_400_naming_email_without_a_query(
    client: Client, recorder: CommandRecorder, query: dict[str, str]
) -> None:
    recorder.clear()
    response = await client.get("/users", params=query)
    assert response.status == 400
    body = await checked(response, "GET", "/users")
    assert "email" in [error["pointer"] for error in body["errors"]], body
    assert recorder.started_names() == []


async def test_orders_have_no_email_filter(client: Client) -> None:
    response = await client.get("/users/u1/orders?email=ada@example.com")
    assert response.status == 400
    body = await checked(response, "GET", "/users/{user_id}/orders")
    assert body["errors"] == [{"pointer": "email", "detail": "unknown parameter"}]


async def test_email_given_twice_is_a_400(client: Client) -> None:
    response = await client.get("/users?email=a@example.com&email=b@example.com")
    assert response.status == 400
    body = await checked(response, "GET", "/users")
    assert {"pointer": "email", "detail": "given more than once"} in body["errors"]
