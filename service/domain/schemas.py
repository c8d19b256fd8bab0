"""Request and response shapes: one msgspec definition feeds validation (validation.py)
and the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from service.domain.ids import PATH_ID_PATTERN

# Patterns end in \Z, not $: in Python, $ also matches before a final newline, so
# "USD\n" passed as a currency and "a@example.com\n" as a second, distinct email.
# openapi.py publishes them with $, which in a JSON Schema pattern means the very end.

# Characters no text field may hold: C0 and C1 controls, DEL, line and paragraph
# separators, and the bidi embeddings, overrides and isolates that make text display in
# another order than it is stored ("Trojan Source"). Bidi marks and the zero-width
# joiners (emoji sequences, Indic scripts) stay allowed.
_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
# The white space a name may be padded with (trimmed before it is stored), spelled out
# because \s means different things in Python and in a JSON Schema (ECMA-262) pattern.
_SPACE = r"\t\n\v\f\r \xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
# 1-100 characters once surrounding white space is trimmed, none of them forbidden. A
# name must also show something (has_visible_character): validation.py checks it, because
# a portable JSON Schema pattern cannot name the invisible characters beyond U+FFFF.
NAME_PATTERN = (
    rf"^[{_SPACE}]*[^{_SPACE}{_FORBIDDEN}]"
    rf"(?:[^{_FORBIDDEN}]{{0,98}}[^{_SPACE}{_FORBIDDEN}])?[{_SPACE}]*\Z"
)
# An ASCII address (RFC 5321 sizes): local part up to 64, labels up to 63, a dotted domain.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)
MAX_EMAIL_LENGTH = 254
MAX_AMOUNT = 10**12

# Examples are what the documentation page shows and generated clients' docs quote: a
# realistic value beats one made up from a pattern.
Name = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        description="1-100 characters after trimming, at least one visible; no controls",
        examples=["Ada Lovelace"],
    ),
]
Email = Annotated[
    str,
    Meta(
        pattern=EMAIL_PATTERN,
        max_length=MAX_EMAIL_LENGTH,
        description="stored lower-cased; unique",
        examples=["ada@example.com"],
    ),
]
Currency = Annotated[
    str, Meta(pattern=r"^[A-Z]{3}\Z", description="ISO 4217 code", examples=["EUR"])
]
Sku = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=rf"^[^{_FORBIDDEN}]*\Z",
        description="no controls",
        examples=["BOOK-1"],
    ),
]
Quantity = Annotated[int, Meta(ge=1, le=10_000, examples=[2])]
Amount = Annotated[
    int, Meta(ge=1, le=MAX_AMOUNT, description="integer minor units", examples=[1999])
]
Timestamp = Annotated[
    str,
    Meta(
        description="RFC 3339, UTC, milliseconds",
        examples=["2026-01-05T09:30:00.000Z"],
        extra_json_schema={"format": "date-time"},
    ),
]
UserId = Annotated[str, Meta(pattern=PATH_ID_PATTERN, examples=["01ke6qvwe0mthc792r014fr2"])]
OrderId = Annotated[str, Meta(pattern=PATH_ID_PATTERN, examples=["01ke6qxq10shn6qryjh0s1zp"])]
Id = Annotated[str, Meta(pattern=PATH_ID_PATTERN)]
# Query and header parameters: the handlers check them (service/http/handlers/common.py)
# and the OpenAPI document publishes these same definitions.
MIN_PAGE_LIMIT, MAX_PAGE_LIMIT, DEFAULT_PAGE_LIMIT = 1, 100, 20
PageLimit = Annotated[
    int,
    Meta(ge=MIN_PAGE_LIMIT, le=MAX_PAGE_LIMIT, extra_json_schema={"default": DEFAULT_PAGE_LIMIT}),
]
After = Annotated[str, Meta(min_length=1)]  # a `next` cursor; an empty one is refused
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}\Z"  # 1-255 visible ASCII characters
IdempotencyKey = Annotated[str, Meta(pattern=IDEMPOTENCY_KEY_PATTERN)]
Cursor = Annotated[
    str | None,
    Meta(
        description="cursor for `after`, null on the last page",
        examples=["eyJpZCI6IjAxa2U2cXZ3ZTBzMzI1bTUzNTl4Y2ttZSJ9.v9hPyj4ZO0it8TSR"],
    ),
]


class UserCreate(Struct, forbid_unknown_fields=True):
    name: Name
    email: Email


class UserPatch(Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    email: Email | UnsetType = UNSET


class OrderItem(Struct, forbid_unknown_fields=True):
    sku: Sku
    quantity: Quantity


class OrderCreate(Struct, forbid_unknown_fields=True):
    amount: Amount
    currency: Currency = "USD"
    items: Annotated[list[OrderItem], Meta(max_length=100)] = []


class User(Struct):
    id: UserId
    name: Annotated[str, Meta(examples=["Ada Lovelace"])]
    email: Annotated[str, Meta(examples=["ada@example.com"])]
    created_at: Timestamp
    updated_at: Timestamp


class Order(Struct):
    id: OrderId
    user_id: UserId
    amount: Annotated[int, Meta(description="integer minor units", examples=[1999])]
    currency: Annotated[str, Meta(examples=["EUR"])]
    items: list[OrderItem]
    created_at: Timestamp


class UserWithOrders(Struct):
    user: User
    orders: list[Order]


class UserPage(Struct):
    items: list[User]
    next: Cursor


class OrderPage(Struct):
    items: list[Order]
    next: Cursor


class ProblemField(Struct):
    pointer: Annotated[str, Meta(description="JSON Pointer or parameter name", examples=["/email"])]
    detail: Annotated[str, Meta(examples=["required"])]


class Problem(Struct, omit_defaults=True):
    """RFC 9457 problem details: every error the service answers."""

    type: Annotated[str, Meta(examples=["/problems/invalid-input"])]
    title: Annotated[str, Meta(examples=["Bad Request"])]
    status: Annotated[int, Meta(examples=[400])]
    detail: Annotated[str, Meta(examples=["The request body is invalid."])]
    errors: list[ProblemField] = []
    errors_omitted: Annotated[
        int, Meta(ge=0, description="problems beyond those listed in `errors`", examples=[0])
    ] = 0


class Health(Struct, omit_defaults=True):
    status: Annotated[str, Meta(examples=["ok"])]
    checks: dict[str, str] = {}


# Bodies that must name at least one field: msgspec cannot say so in a Struct, so
# validation.parse_body enforces it and openapi.py publishes it as `minProperties: 1`.
NON_EMPTY: frozenset[type[Struct]] = frozenset({UserPatch})
