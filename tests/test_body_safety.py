"""Bodies that decode but must not be believed: duplicate keys, names nobody can see."""

from __future__ import annotations

import pytest
from msgspec import Struct

from service.domain.errors import InvalidInput
from service.domain.schemas import OrderCreate, UserCreate, UserPatch
from service.domain.validation import has_visible_character, parse_body
from service.storage.mongo import Mongo
from tests.helpers.api import JSON, checked
from tests.helpers.app import Client


@pytest.mark.parametrize(
    ("kind", "body", "pointers"),
    [
        (UserCreate, b'{"name": "a", "name": "b", "email": "a@example.com"}', ["/name"]),
        (UserCreate, b'{"name":"a","email":"a@example.com","name":"a"}', ["/name"]),
        (UserPatch, b'{"email": "a@example.com", "email": "b@example.com"}', ["/email"]),
        # The same key written with an escape is the same key.
        (UserPatch, b'{"name": "a", "n\\u0061me": "b"}', ["/name"]),
        (
            OrderCreate,
            b'{"amount": 1, "items": [{"sku": "a", "quantity": 1}, '
            b'{"sku": "a", "quantity": 1, "quantity": 2}]}',
            ["/items/1/quantity"],
        ),
        (
            OrderCreate,
            b'{"amount": 1, "amount": 1, "currency": "EUR", "currency": "USD"}',
            ["/amount", "/currency"],
        ),
        (UserPatch, b'{"a/b~": 1, "a/b~": 2}', ["/a~1b~0"]),
    ],
)
def test_a_key_given_twice_is_refused_by_its_pointer(
    kind: type[Struct], body: bytes, pointers: list[str]
) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_body(body, kind)
    assert [error["pointer"] for error in raised.value.errors] == pointers
    assert all("more than once" in error["detail"] for error in raised.value.errors)


@pytest.mark.parametrize(
    "body",
    [
        # Colons, braces and repeated words inside strings are not keys.
        b'{"name": "a: \\"name\\": b {", "email": "name@example.com"}',
        b'{"name":"x","email":"x@example.com"}',
        b'{ "name" : "\\\\", "email" : "y@example.com" }',
    ],
)
def test_keys_inside_strings_are_not_duplicates(body: bytes) -> None:
    assert isinstance(parse_body(body, UserCreate), UserCreate)


def test_the_same_key_in_sibling_objects_is_fine() -> None:
    body = b'{"amount": 5, "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]}'
    order = parse_body(body, OrderCreate)
    assert [item.sku for item in order.items] == ["a", "b"]


@pytest.mark.parametrize(
    "name",
    [
        "\u200b\u200b",  # zero-width spaces
        "\u200d",  # a zero-width joiner alone
        "\ufeff\u2060",  # BOM, word joiner
        "\u00ad",  # a soft hyphen
        "\u3164",  # the Hangul filler, a "letter" that draws nothing
        "\u115f\u1160",
        "\u2800",  # the blank Braille pattern
        " \u200b ",  # trimmed white space around nothing visible
        "\u034f\ufe0f",  # the combining grapheme joiner, a variation selector
        "\U000e0041\U000e007f",  # tag characters
    ],
)
def test_a_name_needs_a_visible_character(name: str) -> None:
    assert not has_visible_character(name)
    with pytest.raises(InvalidInput) as raised:
        parse_body(f'{{"name": "{name}", "email": "a@b.co"}}'.encode(), UserCreate)
    assert [error["pointer"] for error in raised.value.errors] == ["/name"]
    with pytest.raises(InvalidInput):
        parse_body(f'{{"name": "{name}"}}'.encode(), UserPatch)


@pytest.mark.parametrize(
    "name",
    ["Ada", "\u200bAda", "李", "e\u0301", "\u0301", "👩\u200d💻", "\u0915\u094d", "٣", "·", "Ω"],
)
def test_visible_names_of_any_script_are_kept(name: str) -> None:
    assert has_visible_character(name)
    assert parse_body(f'{{"name": "{name}", "email": "a@b.co"}}'.encode(), UserCreate).name == name


async def test_duplicate_keys_are_a_400_and_change_nothing(client: Client, mongo: Mongo) -> None:
    body = b'{"name": "Ada", "email": "ada@example.com", "name": "Mallory"}'
    response = await client.post("/users", data=body, headers=JSON)
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    problem = await checked(response, "POST", "/users")
    assert [error["pointer"] for error in problem["errors"]] == ["/name"]
    assert await mongo.users.count_documents({}) == 0


async def test_an_invisible_name_is_a_400_and_changes_nothing(client: Client, mongo: Mongo) -> None:
    response = await client.post("/users", json={"name": "\u200b\u200b", "email": "a@b.co"})
    assert response.status == 400
    problem = await checked(response, "POST", "/users")
    assert [error["pointer"] for error in problem["errors"]] == ["/name"]
    created = await client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    assert created.status == 201
    user = await created.json()
    response = await client.patch(f"/users/{user['id']}", json={"name": "\u3164"})
    assert response.status == 400
    await checked(response, "PATCH", "/users/{user_id}")
    stored = await mongo.users.find_one({"_id": user["id"]})
    assert stored is not None
    assert stored["name"] == "Ada"
