"""The repository's pure rules, tested directly: cursors (service/domain/cursors.py)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.cursors import Cursors, OrderPosition, UserPosition
from service.domain.errors import InvalidInput
from tests.helpers.api import DOCUMENT

CURSORS = Cursors(b"a secret for the pure tests")
encode_cursor, decode_cursor = CURSORS.encode, CURSORS.decode


def test_cursors_round_trip() -> None:
    assert decode_cursor(encode_cursor({"id": "u1"}), UserPosition) == UserPosition(id="u1")
    order = encode_cursor({"t": 1_767_225_600_000, "id": "o-1"})
    assert decode_cursor(order, OrderPosition) == OrderPosition(t=1_767_225_600_000, id="o-1")


def test_cursors_are_documented_as_a_format_per_list() -> None:
    """Signed, so no pattern can tell a valid one: the format names where it is valid."""
    formats = {}
    for path in ("/users", "/users/{user_id}/orders"):
        parameters = DOCUMENT["paths"][path]["get"]["parameters"]
        (after,) = [p for p in parameters if p["name"] == "after"]
        assert "pattern" not in after["schema"]
        formats[path] = after["schema"]["format"]
    assert formats == {"/users": "user-cursor", "/users/{user_id}/orders": "order-cursor"}


@pytest.mark.parametrize(
    "position",
    [
        {"t": 10**20, "id": "o1"},  # past year 9999: datetime would overflow (was a 500)
        {"t": -1, "id": "o1"},
        {"t": True, "id": "o1"},
        {"t": 1.5, "id": "o1"},
        {"t": "1", "id": "o1"},
        {"t": 1, "id": {"$gt": ""}},
        {"t": 1, "id": "$where"},
        {"t": 1, "id": "o1", "$or": []},
        {"t": 1},
        {"id": "o1"},
    ],
)
def test_forged_order_cursors_are_refused(position: dict[str, Any]) -> None:
    """Should the secret leak, a well-signed cursor must still hold a sane position."""
    with pytest.raises(InvalidInput) as raised:
        decode_cursor(encode_cursor(position), OrderPosition)
    assert raised.value.errors == [{"pointer": "after", "detail": "tampered or malformed"}]


@pytest.mark.parametrize(
    "position", [{"id": {"$ne": None}}, {"id": ["a"]}, {"id": 5}, {"id": "a.b"}, {}, []]
)
def test_forged_user_cursors_are_refused(position: Any) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(position), UserPosition)
