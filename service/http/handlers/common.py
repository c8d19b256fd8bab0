"""Request parsing and conditional rendering shared by the resource handlers."""

from __future__ import annotations

import re

from aiohttp import web
from msgspec import Struct

from service.cache.response_cache import Cached
from service.domain.errors import InvalidInput, NotFound, UnsupportedMediaType
from service.domain.ids import is_valid_path_id
from service.domain.representation import ANY_TAG
from service.domain.schemas import (
    DEFAULT_PAGE_LIMIT,
    EMAIL_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_PAGE_LIMIT,
    MIN_PAGE_LIMIT,
)
from service.domain.validation import parse_body
from service.http.compression import COMPRESSION, coded_tag
from service.http.preconditions import if_none_match
from service.http.responses import JSON

_PAGE_PARAMETERS = frozenset({"limit", "after"})
_EMAIL = re.compile(EMAIL_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def path_id(request: web.Request, name: str) -> str:
    """The id in the URL, or a 404 before any query when it cannot be one of ours."""
    value = request.match_info[name]
    if not is_valid_path_id(value):
        raise NotFound(f"No resource with this {name}.")
    return value


async def json_body[T: Struct](request: web.Request, kind: type[T]) -> T:
    """The validated body; 415 unless it is declared JSON, 413 (raised by read) when too big."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the body as `Content-Type: application/json`.")
    try:
        body = await request.read()
    except web.RequestPayloadError:
        # A body that is not what its Content-Encoding says (gzip that is not gzip), or
        # that ends before its declared length: a client error, not a 500.
        raise InvalidInput("The body could not be read as sent (Content-Encoding).") from None
    return parse_body(body, kind)


def page_params(
    request: web.Request, filters: frozenset[str] = frozenset()
) -> tuple[int, str | None]:
    """`limit` and `after` (and the route's `filters`), each at most once; any other
    parameter is a 400.

    A filter the service does not have (`?name=...`, `?limit[$gt]=0`) must not quietly
    answer with an unfiltered page, and a repeated one must not mean what a proxy in front
    of us thinks it means.
    """
    known = _PAGE_PARAMETERS | filters
    errors = [
        {"pointer": name, "detail": "unknown parameter"}
        for name in sorted(set(request.query) - known)
    ] + [
        {"pointer": name, "detail": "given more than once"}
        for name in sorted(known)
        if len(request.query.getall(name, ())) > 1
    ]
    if errors:
        named = ", ".join(f"`{name}`" for name in sorted(known))
        raise InvalidInput(f"Use {named} alone, each at most once.", errors=errors)
    raw = request.query.get("limit")
    limit = DEFAULT_PAGE_LIMIT
    if raw is not None:
        low, high = MIN_PAGE_LIMIT, MAX_PAGE_LIMIT
        if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
            raise InvalidInput(
                f"`limit` must be an integer from {low} to {high}.",
                errors=[{"pointer": "limit", "detail": f"expected {low}-{high}"}],
            )
        limit = int(raw)
    after = request.query.get("after")
    if after is not None and not after:
        raise InvalidInput(
            "`after` must be a cursor from a previous page.",
            errors=[{"pointer": "after", "detail": "empty"}],
        )
    return limit, after


def email_param(request: web.Request) -> str | None:
    """`email`, when given: an address as `POST /users` accepts it, and never with `after`
    (a lookup has one page)."""
    email = request.query.get("email")
    if email is None:
        return None
    if "after" in request.query:
        raise InvalidInput(
            "Look up by `email` without `after`: a lookup has one page.",
            errors=[{"pointer": "email", "detail": "not with after"}],
        )
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidInput(
            "`email` must be an email address.",
            errors=[{"pointer": "email", "detail": "expected an address, at most 254 characters"}],
        )
    return email


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput(
            "`Idempotency-Key` must be 1-255 visible ASCII characters.",
            errors=[{"pointer": "Idempotency-Key", "detail": "1-255 visible ASCII characters"}],
        )
    return key


def conditional_json(request: web.Request, cached: Cached) -> web.Response:
    """The encoded body as-is with its ETag, or 304 when If-None-Match (weak) already has it.

    A 304 carries the ETag and Vary the 200 would have (RFC 9110 §15.4.5): the gzip tag
    when this request would have been answered with gzip.
    """
    held = if_none_match(request)
    compression = request.app[COMPRESSION]
    if held is not None and (ANY_TAG in held or cached.etag in held):
        headers = {"ETag": cached.etag}
        if compression.eligible(len(cached.body)):
            headers["Vary"] = "Accept-Encoding"
            if compression.wants_gzip(request):
                headers["ETag"] = coded_tag(cached.etag)
        return web.Response(status=304, headers=headers)
    return web.Response(body=cached.body, headers={"Content-Type": JSON, "ETag": cached.etag})
