"""JSON responses and the headers every response carries: encoded once, with orjson."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# Sent instead of aiohttp's default "Python/3.x aiohttp/3.y": versions help only an attacker.
SERVER = "user-service"
# On every response the middleware sends: never let a browser sniff a type; name no versions.
STANDARD_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Server", SERVER))


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return raw_json_response(orjson.dumps(data), status=status, headers=headers)


def raw_json_response(
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON,
) -> web.Response:
    """A response from bytes that are already JSON (a cached body is served as-is)."""
    merged = {"Content-Type": content_type}
    if headers:
        merged.update(headers)
    return web.Response(body=body, status=status, headers=merged)


def add_vary(headers: MutableMapping[str, str], name: str) -> None:
    """Add a request header to Vary (compression and CORS each add theirs)."""
    current = headers.get("Vary")
    headers["Vary"] = f"{current}, {name}" if current else name


async def name_server(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare, for apps without the request middleware (the metrics port)."""
    response.headers["Server"] = SERVER
