"""What one request may cost: the size of its head, and a bound on requests in flight.

aiohttp's own parser limits (set explicitly in app.py, a little above ours) reject
pathological heads before any middleware runs, with a plain-text 400. Below those limits
this middleware answers with the precise problem+json status (414, 431). The in-flight
bound sheds load with a fast 503 instead of queueing until clients time out.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from service.config import SETTINGS, ServerSettings
from service.errors import HeadersTooLarge, Unavailable, UriTooLong

# Probes must answer even when the service is saturated: that is when they matter.
_EXEMPT_PREFIXES = ("/health/", "/metrics")


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


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits = request.app[SETTINGS].server
    if len(request.raw_path) + len(request.method) + 11 > limits.max_request_line_bytes:
        raise UriTooLong("The request line is too long.")
    if _head_size(request) > limits.max_header_bytes:
        raise HeadersTooLarge("The request headers are too large.")
    if request.path.startswith(_EXEMPT_PREFIXES):
        return await handler(request)
    in_flight = request.app[IN_FLIGHT]
    if in_flight.current >= in_flight.limit:
        raise Unavailable("The service is at capacity; retry shortly.", retry_after=1)
    in_flight.current += 1
    try:
        return await handler(request)
    finally:
        in_flight.current -= 1
