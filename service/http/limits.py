"""What one request may cost: the size of its head and body, the time its body may take,
and a bound on requests in flight.

aiohttp's own parser limits (set explicitly in app.py, a little above ours) reject
pathological heads before any middleware runs, with aiohttp's own plain-text answer (the
front, config/haproxy/, refuses those first). Below those limits `check_head` answers with
the precise problem+json status (414, 431).
The body is read before the request takes an in-flight slot, under its own timeout, so
clients that trickle bodies hold a connection, never a slot. The in-flight bound sheds
load with a fast 503 instead of queueing until clients time out.
"""

from __future__ import annotations

import asyncio
from itertools import chain
from typing import Any

from aiohttp import HttpVersion11, web

from service.domain.errors import (
    HeadersTooLarge,
    InvalidInput,
    PayloadTooLarge,
    RequestTimeout,
    Unavailable,
    UriTooLong,
)
from service.settings.model import ServerSettings

MAX_BODY_BYTES = 64 * 1024
LINGERING_SECONDS = 2.0
_TOO_LARGE = f"The request body is too large (at most {MAX_BODY_BYTES} bytes)."


class InFlight:
    """The requests this process is handling now (their tasks; single-threaded, so plain
    set operations are safe), bounded, and cut off together at shutdown."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tasks: set[asyncio.Task[Any]] = set()
        self._cut_off: set[asyncio.Task[Any]] = set()

    @property
    def current(self) -> int:
        return len(self.tasks)

    def take(self, task: asyncio.Task[Any]) -> None:
        """Take a slot, or answer 503 at once: a fast refusal beats a queue clients leave."""
        if len(self.tasks) >= self.limit:
            raise Unavailable("The service is at capacity; retry shortly.", retry_after=1)
        self.tasks.add(task)

    def release(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        self._cut_off.discard(task)

    def cut_off(self) -> None:
        """Cancel every request still running (shutdown, at the graceful timeout): each
        answers 503 (`was_cut_off`) before aiohttp's own shutdown cancels it silently."""
        for task in self.tasks:
            self._cut_off.add(task)
            task.cancel()

    def was_cut_off(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task`'s cancellation is `cut_off`'s; it is then uncancelled, to answer.
        Otherwise the client went away, or aiohttp itself is cancelling."""
        if task not in self._cut_off:
            return False
        task.uncancel()
        return True


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def handler_args(settings: ServerSettings) -> dict[str, float]:
    """aiohttp's per-connection settings (`web.Application(handler_args=...)`), so they are
    the same under gunicorn's stock worker, `python -m service` and adev: the idle
    keep-alive timeout, how long to read and drop the rest of a body after answering early
    (413, 408: long enough that the client reads our answer rather than a reset, short
    enough that a stalled sender does not hold the connection), and hard parser limits
    twice ours, so that ours answer first with the right status."""
    return {
        "keepalive_timeout": settings.keepalive_timeout_seconds,
        "lingering_time": LINGERING_SECONDS,
        "max_line_size": 2 * max(settings.max_request_line_bytes, settings.max_header_bytes),
        "max_field_size": 2 * settings.max_header_bytes,
        "max_headers": 128,
    }


def _head_size(request: web.Request) -> int:
    """The header block's size: each line is its name, value, ": " and CRLF."""
    raw = request.raw_headers
    return sum(map(len, chain.from_iterable(raw))) + 4 * len(raw)


def check_head(request: web.Request, limits: ServerSettings) -> None:
    """414 for a long request line, 431 for large headers: before any other work."""
    if len(request.raw_path) + len(request.method) + 11 > limits.max_request_line_bytes:
        raise UriTooLong("The request line is too long.")
    if _head_size(request) > limits.max_header_bytes:
        raise HeadersTooLarge("The request headers are too large.")


def _declared_too_large(request: web.BaseRequest) -> bool:
    length = request.content_length
    return length is not None and length > MAX_BODY_BYTES


async def expect_continue(request: web.Request) -> None:
    """aiohttp's `Expect: 100-continue` answer, withheld from a body declared too large:
    the middleware then answers 413 before the client sends a byte of it."""
    if request.version < HttpVersion11 or _declared_too_large(request):
        return
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed()
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the response proper has not started


async def receive_body(request: web.Request, seconds: float) -> None:
    """Read the whole body (cached for the handler's `read()`) within `seconds`; the
    middleware calls this when the request has one, before its work begins.

    413 at once for a declared length over the limit (aiohttp's read raises 413 for an
    undeclared one); 408 when the client stalls.
    """
    if _declared_too_large(request):
        raise PayloadTooLarge(_TOO_LARGE)
    try:
        async with asyncio.timeout(seconds):
            await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {seconds:g} seconds."
        ) from None
    except (ConnectionError, RuntimeError):
        # The client left, or the connection was closed at the cap: aiohttp raises
        # RuntimeError for a read on a connection already gone.
        if request.transport is not None:
            raise
        raise RequestTimeout("The connection closed before the body arrived.") from None
    except web.RequestPayloadError:
        # A body that is not what its Content-Encoding or framing says: a client error.
        raise InvalidInput("The body could not be read as sent.") from None
