"""What one request may cost: the size of its head, and a bound on requests in flight.

aiohttp's own parser limits (set explicitly in app.py, a little above ours) reject
pathological heads before any middleware runs, with a plain-text 400. Below those limits
`check_head` answers with the precise problem+json status (414, 431). The in-flight
bound sheds load with a fast 503 instead of queueing until clients time out.
"""

from __future__ import annotations

from aiohttp import web

from service.config import ServerSettings
from service.errors import HeadersTooLarge, Unavailable, UriTooLong


class InFlight:
    """Requests this process is handling now; single-threaded, so a plain counter is safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def parser_limits(settings: ServerSettings) -> dict[str, int]:
    """aiohttp's hard parser limits: twice ours, so ours answer first with the right status."""
    return {
        "max_line_size": 2 * max(settings.max_request_line_bytes, settings.max_header_bytes),
        "max_field_size": 2 * settings.max_header_bytes,
        "max_headers": 128,
    }


def _head_size(request: web.Request) -> int:
    return sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def check_head(request: web.Request, limits: ServerSettings) -> None:
    """414 for a long request line, 431 for large headers: before any other work."""
    if len(request.raw_path) + len(request.method) + 11 > limits.max_request_line_bytes:
        raise UriTooLong("The request line is too long.")
    if _head_size(request) > limits.max_header_bytes:
        raise HeadersTooLarge("The request headers are too large.")


def at_capacity() -> Unavailable:
    return Unavailable("The service is at capacity; retry shortly.", retry_after=1)
