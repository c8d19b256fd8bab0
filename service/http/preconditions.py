"""Entity-tag preconditions (RFC 9110 §8.8.3, §13.1.1, §13.1.2): parsed strictly.

A header that is not an entity-tag list is a client error (400), never "matches nothing":
read that way, a malformed If-Match became a 412 saying the user had changed, and a
malformed If-None-Match on a write would let the write through unconditionally.
"""

from __future__ import annotations

import re

from aiohttp import web

from service.domain.errors import InvalidInput
from service.domain.representation import ANY_TAG as ANY
from service.http.compression import identity_tag

# One pattern for parsing and for the OpenAPI document, so generated clients (and the
# fuzzer) send what is accepted: `*` alone, or quoted tags (optionally W/) with commas.
_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
ENTITY_TAGS_PATTERN = rf"^(?:\*|{_TAG}(?:[ \t]*,[ \t]*{_TAG})*)$"
_LIST = re.compile(ENTITY_TAGS_PATTERN)
_ONE = re.compile(_TAG)


def _listed(request: web.BaseRequest, name: str) -> list[str] | None:
    """The tags one header lists, `[ANY]` for `*`, None when absent; 400 when malformed."""
    headers = request.headers
    if name not in headers:
        return None
    value = ", ".join(headers.getall(name))  # several fields are one list (RFC 9110 §5.3)
    if not _LIST.fullmatch(value):
        raise InvalidInput(
            f"`{name}` must be `*` or a comma-separated list of quoted entity tags.",
            errors=[{"pointer": name, "detail": 'expected * or "tag", W/"tag", ...'}],
        )
    return [identity_tag(tag) for tag in _ONE.findall(value)] or [ANY]


def if_match(request: web.BaseRequest) -> list[str] | None:
    """If-Match's tags for strong comparison: weak tags can never match, so they are dropped."""
    tags = _listed(request, "If-Match")
    return None if tags is None else [tag for tag in tags if not tag.startswith("W/")]


def if_none_match(request: web.BaseRequest) -> list[str] | None:
    """If-None-Match's tags for weak comparison: W/ dropped."""
    tags = _listed(request, "If-None-Match")
    return None if tags is None else [tag.removeprefix("W/") for tag in tags]
