"""JSON responses and the headers every response carries: encoded once, with orjson."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import HttpVersion, HttpVersion11

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# Sent instead of aiohttp's default "Python/3.x aiohttp/3.y": versions help only an attacker.
SERVER = "user-service"
# On every response the pipeline sends: never let a browser sniff a type; name no versions.
STANDARD_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Server", SERVER))


class Representation(web.StreamResponse):
    """A cached representation's 200, written as one chunk: its fixed head (type, length,
    ETag, coding and the standard headers) serialized once per representation by
    `Compression`, then what the pipeline set on `headers` for this request (its id, CORS),
    Vary, Date and the body.

    aiohttp's Response would copy, complete, validate and serialize a header dictionary on
    every hit: a measurable share of one (README, Performance). `headers` holds only the
    additions; a Vary among them joins the representation's own. Nothing else is added:
    no on_response_prepare signal runs (the API app registers none).
    """

    def __init__(self, head: bytes, body: bytes, vary: str | None) -> None:
        super().__init__()
        self._head = head  # header lines ending in CRLF, Vary left out
        self._body = body
        self._vary = vary

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is None:
            self._req = request
            self._payload_writer = request.writer
            if self._keep_alive is None:
                self._keep_alive = request.keep_alive
        return self._payload_writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        request, writer = self._req, self._payload_writer
        assert request is not None, "Response has not been started"
        assert writer is not None
        body = self._body if request.method != hdrs.METH_HEAD else b""
        assert isinstance(body, bytes)
        lines = ""
        vary = self._vary
        for name, value in self._headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"Newline in the {name} header")
            if name.lower() == "vary":
                vary = f"{vary}, {value}" if vary else value
            else:
                lines += f"{name}: {value}\r\n"
        if vary:
            lines += f"Vary: {vary}\r\n"
        lines += f"Date: {rfc822_formatted_time()}\r\n\r\n"
        status = _status_line(request.version, bool(self._keep_alive))
        await writer.write_eof(b"".join((status, self._head, lines.encode(), body)))
        self._eof_sent = True
        self._req = None
        self._body_length = len(body)
        self._payload_writer = None


_OK_11 = b"HTTP/1.1 200 OK\r\n"


def _status_line(version: HttpVersion, keep_alive: bool) -> bytes:
    """The status line of a 200, and the Connection header aiohttp would add."""
    if version == HttpVersion11:
        return _OK_11 if keep_alive else _OK_11 + b"Connection: close\r\n"
    line = f"HTTP/{version.major}.{version.minor} 200 OK\r\n".encode()
    return line + b"Connection: keep-alive\r\n" if keep_alive else line


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
    """on_response_prepare, for apps outside the request pipeline (the metrics port)."""
    response.headers["Server"] = SERVER
