"""Logging set-up and the request id every log line of a request carries.

The request id lives in a context variable so that code far below the handlers (retries,
cache warnings) logs it without being handed the request.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import sys
import time
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from service.config import SETTINGS, LogSettings

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: LogSettings) -> None:
    """Install one stderr handler on the root logger; safe to call again (tests, reloads)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_user_service", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._user_service = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.level)
    # pymongo's DEBUG records carry whole commands, documents included: never log them.
    for noisy in ("pymongo", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(settings.level)))


access_log = logging.getLogger("service.access")
UNMATCHED = "<unmatched>"


def route_label(request: web.Request) -> str:
    """The route template (`/users/{user_id}`), never the raw path: bounded cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy."""

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or "-"
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded or not self._trusted or not self._is_trusted(peer):
            return peer
        # Walk from the nearest hop outwards; the first untrusted address is the client.
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request, structured; /metrics scrapes are left out."""
    if request.path == "/metrics" or not request.app[SETTINGS].log.access:
        return await handler(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as error:
        status = error.status
        raise
    else:
        status = response.status
    finally:
        route = route_label(request)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        access_log.info(
            "%s %s %d %.2fms",
            request.method,
            route,
            status,
            duration_ms,
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "remote": request.app[CLIENT_ADDRESS].of(request),
            },
        )
    return response
