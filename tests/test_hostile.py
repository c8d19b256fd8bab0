"""Hostile input: injection, oversize, malformed and odd requests are refused cleanly.

Each case must get a 4xx `application/problem+json` answer that the OpenAPI document
allows, leave every collection exactly as it was, and send MongoDB no command at all: the
CommandRecorder sees every command the app's driver sends to the test database, so
nothing a client wrote can have reached a query. Values that only look like operators
are plain data: they are stored as strings, and never become a key of a command.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.domain.cursors import Cursors
from service.domain.validation import MAX_JSON_DEPTH
from service.storage.mongo import Document, Mongo
from tests.helpers.api import PROBLEM, checked
from tests.helpers.app import CURSOR_SECRET, Client
from tests.helpers.mongo import CommandRecorder

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

KIB = 1024

encode_cursor = Cursors(CURSOR_SECRET.encode()).encode  # the app under test signs alike


@dataclass(frozen=True)
class Hostile:
    """One request that must be refused; `{user}` in the URL is an existing user's id."""

    name: str
    method: str
    url: str
    status: int
    json: Any = None
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    pointers: list[str] | None = None  # the `errors` the problem must name, when it has some
    chunked: bool = False  # send `data` with Transfer-Encoding: chunked


def body(url: str, json_body: Any, pointers: list[str], method: str = "POST") -> Hostile:
    return Hostile(
        f"{method} {url} {json.dumps(json_body)[:60]}",
        method,
        url,
        400,
        json=json_body,
        pointers=pointers,
    )


def raw(
    name: str, data: bytes, status: int = 400, headers: dict[str, str] | None = None
) -> Hostile:
    """A POST /users body sent as is, declared JSON unless `headers` say otherwise."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return Hostile(name, "POST", "/users", status, data=data, headers=headers)


def get(url: str, status: int = 400, pointers: list[str] | None = None) -> Hostile:
    return Hostile(f"GET {url[:80]}", "GET", url, status, pointers=pointers)


def unsigned(position: Any) -> str:
    """A cursor-shaped string whose MAC is made up."""
    payload = base64.urlsafe_b64encode(json.dumps(position).encode()).rstrip(b"=").decode()
    return f"{payload}.AAAAAAAAAAAAAAAAAAAAAA"


USERS, ORDERS, USER = "/users", "/users/{user}/orders", "/users/{user}"
USER_OK = {"name": "Mallory", "email": "mallory@example.com"}

OPERATORS_IN_BODIES = [
    body(USERS, {"name": "x", "email": {"$ne": None}}, ["/email"]),
    body(USERS, {"name": {"$where": "sleep(1000)"}, "email": "a@example.com"}, ["/name"]),
    body(USERS, {**USER_OK, "$set": {"email": "victim@example.com"}}, ["/$set"]),
    body(USERS, {**USER_OK, "a.b": 1}, ["/a.b"]),
    body(USERS, {**USER_OK, "_id": "chosen"}, ["/_id"]),
    body(USERS, {**USER_OK, "version": 0}, ["/version"]),
    body(USERS, {"name": ["x"], "email": ["a@example.com"]}, ["/name", "/email"]),
    body(USERS, {"name": {"first": "x"}, "email": "a@example.com"}, ["/name"]),
    body(USER, {"email": {"$gt": ""}}, ["/email"], "PATCH"),
    body(USER, {"name": {"$regex": ".*"}}, ["/name"], "PATCH"),
    body(USER, {"$set": {"name": "x"}}, ["/$set"], "PATCH"),
    body(USER, {"name.first": "x"}, ["/name.first"], "PATCH"),
    body(ORDERS, {"amount": {"$gt": 0}}, ["/amount"]),
    body(ORDERS, {"amount": [1]}, ["/amount"]),
    body(ORDERS, {"amount": 1, "currency": ["USD"]}, ["/currency"]),
    body(ORDERS, {"amount": 1, "items": {"$elemMatch": {}}}, ["/items"]),
    body(ORDERS, {"amount": 1, "items": [{"sku": {"$ne": ""}, "quantity": 1}]}, ["/items/0/sku"]),
    body(
        ORDERS, {"amount": 1, "items": [{"sku": "a", "quantity": 1, "$where": "1"}]}, ["/items/0"]
    ),
    body(ORDERS, {"amount": 1, "items": ["a"]}, ["/items/0"]),
    body(ORDERS, {"amount": 1, "user_id": "someone-else"}, ["/user_id"]),
]

OPERATORS_IN_PATHS = [
    Hostile("GET $where", "GET", "/users/$where", 404),
    Hostile("GET json operator", "GET", "/users/%7B%22$ne%22:null%7D", 404),
    Hostile("GET dotted", "GET", "/users/a.b", 404),
    Hostile("GET NUL", "GET", "/users/%00", 404),
    Hostile("GET slash", "GET", "/users/a%2Fb", 404),
    Hostile("GET too long", "GET", "/users/" + "u" * 65, 404),
    Hostile("GET order $gt", "GET", "/orders/$gt", 404),
    Hostile("GET orders of $regex", "GET", "/users/%24regex/orders", 404),
    Hostile("PATCH $ne", "PATCH", "/users/$ne", 404, json={"name": "x"}),
    Hostile("DELETE $where", "DELETE", "/users/$where", 404),
    Hostile("POST orders of $ne", "POST", "/users/$ne/orders", 404, json={"amount": 1}),
]

OPERATORS_IN_QUERIES = [
    get("/users?limit[$gt]=0", pointers=["limit[$gt]"]),
    get("/users?email[$ne]=x", pointers=["email[$ne]"]),
    get('/users?limit={"$gt":0}', pointers=["limit"]),
    get('/users?after={"$gt":""}', pointers=["after"]),
    get("/users?limit=1&limit=100", pointers=["limit"]),
    get("/users/{user}/orders?after[$ne]=x", pointers=["after[$ne]"]),
    get("/users/{user}/orders?user_id=someone-else", pointers=["user_id"]),
]

PAGING_ABUSE = [
    get(f"{url}?{query}", pointers=["limit"])
    for url in (USERS, ORDERS)
    for query in (
        "limit=-1",
        "limit=0",
        "limit=101",
        "limit=" + "9" * 40,
        "limit=abc",
        "limit=1.5",
        "limit=1e2",
        "limit=%205",
        "limit=%EF%BC%95",
        "limit=",
        "limit=0x10",
    )
] + [
    get(f"{url}?after={after}", pointers=["after"])
    for url in (USERS, ORDERS)
    for after in (
        "",
        "garbage",
        "eyJpZCI6IngifQ.AAAA",
        unsigned({"id": {"$gt": ""}}),
        unsigned({"t": 0, "id": {"$gt": ""}}),
        encode_cursor({"id": {"$gt": ""}}),  # well signed, as if the secret had leaked
        encode_cursor({"t": 0, "id": {"$gt": ""}}),
        encode_cursor({"t": 10**20, "id": "x"}),
        encode_cursor({"id": "x", "t": 0, "$or": []}),
        encode_cursor([]),  # type: ignore[arg-type]
        "%00.%00",
        "." * 100,
    )
]

BAD_BODIES = [
    raw("70 KiB", b'{"name": "' + b"a" * 70 * KIB + b'", "email": "a@example.com"}', 413),
    raw(
        "gzip bomb",
        gzip.compress(b'{"name": "' + b"a" * 10_000_000 + b'"}'),
        413,
        headers={"Content-Encoding": "gzip"},
    ),
    Hostile(
        "chunked 100 KiB",
        "POST",
        "/users",
        413,
        data=b"[" + b"1," * 50 * KIB + b"1]",
        headers={"Content-Type": "application/json"},
        chunked=True,
    ),
    Hostile(
        "PATCH 70 KiB",
        "PATCH",
        USER,
        413,
        data=b'{"name": "' + b"a" * 70 * KIB + b'"}',
        headers={"Content-Type": "application/json"},
    ),
    raw("not gzip", b"not gzip at all", headers={"Content-Encoding": "gzip"}),
    raw("depth 10,000", b"[" * 10_000 + b"]" * 10_000),
    raw("depth 10,000 unclosed", b'{"name": ' + b"[" * 10_000),
    raw(
        f"depth {MAX_JSON_DEPTH + 1} in a field",
        b'{"name": "x", "email": '
        + b"[" * (MAX_JSON_DEPTH + 1)
        + b"]" * (MAX_JSON_DEPTH + 1)
        + b"}",
    ),
    raw("invalid UTF-8", b'{"name": "\xff\xfe", "email": "a@example.com"}'),
    raw("overlong UTF-8 slash", b'{"name": "\xc0\xaf", "email": "a@example.com"}'),
    raw("UTF-8 surrogate bytes", b'{"name": "\xed\xa0\x80", "email": "a@example.com"}'),
    raw("escaped lone surrogate", b'{"name": "\\ud800", "email": "a@example.com"}'),
    raw("UTF-16", json.dumps(USER_OK).encode("utf-16")),
    raw("byte order mark", b"\xef\xbb\xbf" + json.dumps(USER_OK).encode()),
    raw("NaN", b'{"name": "x", "email": "a@example.com", "n": NaN}'),
    raw("trailing garbage", json.dumps(USER_OK).encode() + b"}"),
    raw("empty", b""),
    raw("null", b"null"),
    raw("array", json.dumps([USER_OK]).encode()),
    raw(
        "form body",
        b"name=x&email=a%40example.com",
        415,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    raw("text/plain", json.dumps(USER_OK).encode(), 415, headers={"Content-Type": "text/plain"}),
    raw(
        "json-patch",
        json.dumps(USER_OK).encode(),
        415,
        headers={"Content-Type": "application/json-patch+json"},
    ),
    raw(
        "multipart",
        json.dumps(USER_OK).encode(),
        415,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    ),
    raw("no content type", json.dumps(USER_OK).encode(), 415, headers={"Content-Type": ""}),
]

BAD_HEADS = [
    Hostile(
        "431 header block",
        "GET",
        "/users",
        431,
        headers={f"X-Pad-{i}": "v" * 500 for i in range(20)},
    ),
    Hostile("431 on a write", "POST", "/users", 431, json=USER_OK, headers={"X-Pad": "v" * 9000}),
    get("/users/" + "a" * 5000, 414),
    get("/users?after=" + "A" * 5000, 414),
    Hostile(
        "Idempotency-Key non-ASCII",
        "POST",
        "/users",
        400,
        json=USER_OK,
        headers={"Idempotency-Key": "kéy"},
        pointers=["Idempotency-Key"],
    ),
    Hostile(
        "Idempotency-Key too long",
        "POST",
        "/users",
        400,
        json=USER_OK,
        headers={"Idempotency-Key": "k" * 256},
        pointers=["Idempotency-Key"],
    ),
    Hostile(
        "Idempotency-Key with a space",
        "POST",
        ORDERS,
        400,
        json={"amount": 1},
        headers={"Idempotency-Key": "a b"},
        pointers=["Idempotency-Key"],
    ),
]


def bad_name(name: str) -> Hostile:
    return Hostile(
        f"name {name[:30]!r} ({len(name)})",
        "POST",
        USERS,
        400,
        json={"name": name, "email": "ok@example.com"},
        pointers=["/name"],
    )


def bad_email(email: str) -> Hostile:
    return Hostile(
        f"email {email[:30]!r} ({len(email)})",
        "POST",
        USERS,
        400,
        json={"name": "Ok", "email": email},
        pointers=["/email"],
    )


UNICODE_REFUSED = [
    bad_name("Ada\x00"),
    bad_name("\u202eexe.txt"),  # right-to-left override
    bad_name("Ada\u2066x\u2069"),  # bidi isolate
    bad_name("Ada\x85"),  # C1 control
    bad_name("Ada\u2028Lovelace"),  # line separator
    bad_name("Ada\tLovelace"),
    bad_name(" \t\n "),  # white space only
    bad_name("\u3000\xa0\u2003"),  # Unicode white space only
    bad_name(""),
    bad_name("n" * 101),
    bad_name("🦆" * 101),
    bad_name("n" * 10_000),
    bad_email("ada@bücher.de"),  # IDN: send the punycode form
    bad_email("adä@example.com"),  # internationalised local part
    bad_email("ada@example.com\n"),
    bad_email("ada@example.com\x00"),
    bad_email("ada\u202e@example.com"),
    bad_email("a da@example.com"),
    bad_email("ada@localhost"),
    bad_email("a" * 65 + "@example.com"),
    bad_email("a@" + "b" * 250 + ".com"),
    bad_email(""),
    body(ORDERS, {"amount": 1, "items": [{"sku": "SKU\x00", "quantity": 1}]}, ["/items/0/sku"]),
    body(ORDERS, {"amount": 1, "items": [{"sku": "\u202e1", "quantity": 1}]}, ["/items/0/sku"]),
]

CASES = (
    OPERATORS_IN_BODIES
    + OPERATORS_IN_PATHS
    + OPERATORS_IN_QUERIES
    + PAGING_ABUSE
    + BAD_BODIES
    + BAD_HEADS
    + UNICODE_REFUSED
)


async def snapshot(mongo: Mongo) -> dict[str, list[Document]]:
    database = mongo.client[mongo.settings.database]
    return {
        name: await database[name].find().sort("_id", 1).to_list(None)
        for name in sorted(await database.list_collection_names())
    }


@pytest.fixture
async def victim(client: Client) -> dict[str, str]:
    """A user with an order and an idempotency record: what an attack would be after."""
    response = await client.post(
        "/users",
        json={"name": "Victim", "email": "victim@example.com"},
        headers={"Idempotency-Key": "victim-1"},
    )
    assert response.status == 201
    user_id = (await response.json())["id"]
    order = await client.post(f"/users/{user_id}/orders", json={"amount": 100})
    assert order.status == 201
    return {"user": user_id}


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4 * KIB):
        yield data[start : start + 4 * KIB]


def _template(url: str) -> str | None:
    """The documented path this URL is meant for, when the case addresses one."""
    path = url.split("?")[0]
    return path.replace("{user}", "{user_id}") if path in (USERS, USER, ORDERS) else None


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_hostile_requests_are_refused_without_touching_the_database(
    client: Client,
    mongo: Mongo,
    recorder: CommandRecorder,
    victim: dict[str, str],
    case: Hostile,
) -> None:
    before = await snapshot(mongo)
    recorder.clear()
    data: Any = _chunks(case.data) if case.chunked and case.data else case.data
    # A refused body may leave the connection unusable; each case gets its own.
    response = await client.request(
        case.method,
        case.url.replace("{user}", victim["user"]),
        json=case.json,
        data=data,
        headers={"Connection": "close", **case.headers},
    )
    assert response.status == case.status, await response.text()
    assert response.content_type == PROBLEM
    template = _template(case.url)
    if template is not None and case.status != 404:
        problem = await checked(response, case.method, template)
    else:
        problem = await response.json()
    assert problem["status"] == case.status
    assert problem["detail"]
    if case.pointers is not None:
        assert sorted(error["pointer"] for error in problem["errors"]) == sorted(case.pointers)
    assert recorder.started_names() == [], "a refused request reached MongoDB"
    assert await snapshot(mongo) == before


def test_every_case_is_distinct() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) > 100


# Keys MongoDB commands may carry: the driver's own, and the operators the repository
# writes itself. A key a client sent would show up as something else.
DRIVER_KEYS = {"$db", "$clusterTime", "$readPreference", "lsid", "txnNumber"}
SERVICE_OPERATORS = {"$set", "$inc", "$in", "$gt", "$lt", "$ne", "$or"}


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


async def test_operator_lookalikes_are_stored_as_plain_strings(
    client: Client, mongo: Mongo, recorder: CommandRecorder
) -> None:
    """`$where` as a name or `$gt` as a key is data: stored as sent, never a command key."""
    recorder.clear()
    response = await client.post(
        "/users",
        json={"name": "$where", "email": "$ne@example.com"},
        headers={"Idempotency-Key": "$gt"},
    )
    assert response.status == 201, await response.text()
    user = await checked(response, "POST", "/users")
    patched = await client.patch(
        f"/users/{user['id']}", json={"name": '{"$set": 1}'}, headers={"If-Match": '"$in"'}
    )
    assert patched.status == 412
    order = await client.post(
        f"/users/{user['id']}/orders",
        json={"amount": 1, "items": [{"sku": "$regex", "quantity": 1}]},
        headers={"Idempotency-Key": "$or"},
    )
    assert order.status == 201, await order.text()
    page = await client.get("/users", params={"limit": "1"})
    assert page.status == 200
    stored = await mongo.users.find_one({"_id": user["id"]})
    assert stored is not None
    assert (stored["name"], stored["email"]) == ("$where", "$ne@example.com")
    stored_order = await mongo.orders.find_one({"user_id": user["id"]})
    assert stored_order is not None
    assert stored_order["items"] == [{"sku": "$regex", "quantity": 1}]
    assert recorder.commands, "nothing was recorded"
    keys = {key for command in recorder.commands for key in _keys(command)}
    operators = {key for key in keys if key.startswith("$")}
    assert operators <= DRIVER_KEYS | SERVICE_OPERATORS, operators - SERVICE_OPERATORS
    assert "$where" not in keys
    assert "$regex" not in keys
    assert not any("." in key for key in keys)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Zoë Ångström", "Zoë Ångström"),
        ("Zoe\u0301", "Zoe\u0301"),  # combining marks are kept as sent, not normalised
        ("👩\u200d💻 Ada 🦆", "👩\u200d💻 Ada 🦆"),  # emoji and the joiner that builds them
        ("\u200fشريف", "\u200fشريف"),  # a right-to-left mark is a mark, not an override
        ("李小龍", "李小龍"),
        ("\u3000 Ada \xa0", "Ada"),  # Unicode padding is trimmed like ASCII padding
        ("🦆" * 100, "🦆" * 100),  # 100 characters, 400 bytes
    ],
)
async def test_names_in_any_script_are_stored_exactly(
    client: Client, mongo: Mongo, name: str, stored: str
) -> None:
    response = await client.post("/users", json={"name": name, "email": "zoe@example.com"})
    assert response.status == 201, await response.text()
    user = await checked(response, "POST", "/users")
    assert user["name"] == stored
    document = await mongo.users.find_one({"_id": user["id"]})
    assert document is not None
    assert document["name"] == stored


async def test_punycode_domains_are_the_way_to_send_an_idn_email(
    client: Client, mongo: Mongo
) -> None:
    response = await client.post("/users", json={"name": "B", "email": "Ada@XN--Bcher-kva.de"})
    assert response.status == 201, await response.text()
    assert (await response.json())["email"] == "ada@xn--bcher-kva.de"
    assert await mongo.users.count_documents({"email": "ada@xn--bcher-kva.de"}) == 1
