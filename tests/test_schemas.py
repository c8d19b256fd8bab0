"""Body parsing rules, tested directly: what counts as well-formed, and how errors are named."""

from __future__ import annotations

import json

import pytest
from msgspec import Struct

from service.domain.errors import InvalidInput
from service.domain.schemas import OrderCreate, UserCreate, UserPatch
from service.domain.validation import MAX_JSON_DEPTH, nests_deeper_than, parse_body
from tests.helpers.api import DOCUMENT


@pytest.mark.parametrize("written", [b"1705", b"1705.0", b"17.05e2", b"1.705E+3", b"170500e-2"])
def test_whole_numbers_are_integers_however_they_are_written(written: bytes) -> None:
    """JSON Schema calls 1705.0 an integer, so the document promises it is accepted."""
    order = parse_body(b'{"amount": ' + written + b', "items": [{"sku": "a", "quantity": 2.0}]}',
                       OrderCreate)  # fmt: skip
    assert order.amount == 1705
    assert type(order.amount) is int
    assert type(order.items[0].quantity) is int


@pytest.mark.parametrize("written", [b"1705.5", b"1e400", b"-1e400", b"1000000000000.0000001"])
def test_fractions_and_overflows_are_not_integers(written: bytes) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_body(b'{"amount": ' + written + b"}", OrderCreate)
    assert [error["pointer"] for error in raised.value.errors] == ["/amount"]


def test_an_empty_patch_is_refused_and_the_document_says_so() -> None:
    """The document must not call `{}` a valid patch: the service refuses it."""
    with pytest.raises(InvalidInput) as raised:
        parse_body(b"{}", UserPatch)
    assert [error["pointer"] for error in raised.value.errors] == [""]
    assert DOCUMENT["components"]["schemas"]["UserPatch"]["minProperties"] == 1
    assert parse_body(b'{"name": "Ada"}', UserPatch).name == "Ada"


@pytest.mark.parametrize(
    ("kind", "body", "pointer"),
    [
        (UserCreate, b'{"name": "Ada", "email": "ada@example.com\\n"}', "/email"),
        (OrderCreate, b'{"amount": 1, "currency": "USD\\n"}', "/currency"),
        (OrderCreate, b'{"amount": 1, "currency": "USD\\r\\n"}', "/currency"),
    ],
)
def test_a_final_newline_is_not_the_end_of_a_pattern(
    kind: type[Struct], body: bytes, pointer: str
) -> None:
    """Python's $ matches before a final newline; the patterns must not."""
    with pytest.raises(InvalidInput) as raised:
        parse_body(body, kind)
    assert [error["pointer"] for error in raised.value.errors] == [pointer]


def test_the_document_publishes_json_schema_patterns() -> None:
    published = json.dumps(DOCUMENT)
    assert "\\\\Z" not in published
    email = DOCUMENT["components"]["schemas"]["UserCreate"]["properties"]["email"]["pattern"]
    assert email.endswith(")+$")


@pytest.mark.parametrize(
    "name",
    [
        "\u202eevil.exe",  # right-to-left override
        "a\u2066b\u2069",  # bidi isolate
        "Ada\u0085",  # NEL, a C1 control
        "A\x9bda",  # CSI, a C1 control
        "Ada\u2028Lovelace",  # line separator
        "\x1cAda",
        "Ada\x00",
        "\u3000 \xa0",  # white space only, however wide
    ],
)
def test_names_refuse_controls_and_bidi_overrides(name: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_body(json.dumps({"name": name, "email": "a@example.com"}).encode(), UserCreate)
    assert [error["pointer"] for error in raised.value.errors] == ["/name"]


@pytest.mark.parametrize(
    "name",
    [
        "Zoë",
        "Zoe\u0301",
        "\u0301",
        "👩\u200d💻 Ada",
        "\u200fشريف",
        "李小龍",
        "\u3000Ada\xa0",
        "🦆" * 100,
    ],
)
def test_names_take_any_script_emoji_and_combining_marks(name: str) -> None:
    user = parse_body(json.dumps({"name": name, "email": "a@example.com"}).encode(), UserCreate)
    assert user.name == name


@pytest.mark.parametrize("sku", ["\x00", "SKU\u202e1", "a\nb", "x" * 65, ""])
def test_skus_refuse_controls(sku: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_body(json.dumps({"amount": 1, "items": [{"sku": sku, "quantity": 1}]}).encode(),
                   OrderCreate)  # fmt: skip
    assert [error["pointer"] for error in raised.value.errors] == ["/items/0/sku"]


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (b"[" * 32 + b"]" * 32, False),
        (b"[" * 33 + b"]" * 33, True),
        (b'{"a": ' * 33 + b"1" + b"}" * 33, True),
        (b"[" * 10_000, True),  # refused before the decoder sees it: no RecursionError
        (b'{"name": "' + b"[{" * 40 + b'"}', False),  # brackets in strings do not count
        (b'{"name": "\\"' + b"[" * 40 + b'"}', False),  # nor after an escaped quote
        (b'["\\\\", ' + b"[" * 40 + b"]" * 41, True),  # an escaped backslash ends no string
        (b"[" + b"[]," * 10_000 + b"[]]", False),  # wide is fine
    ],
)
def test_nesting_depth_is_counted_outside_strings(body: bytes, too_deep: bool) -> None:
    assert nests_deeper_than(body, MAX_JSON_DEPTH) is too_deep


def test_deep_bodies_are_refused_with_a_clear_reason() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_body(b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", UserCreate)
    assert raised.value.detail == f"The body nests deeper than {MAX_JSON_DEPTH} levels."
    name = "[" * 40 + "]" * 40
    assert (
        parse_body(json.dumps({"name": name, "email": "a@b.co"}).encode(), UserCreate).name == name
    )
