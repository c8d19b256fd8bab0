"""Logging set-up and the request id every log line of a request carries.

The request id lives in a context variable so that code far below the handlers (retries,
cache warnings) logs it without being handed the request.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import re
import secrets
import sys
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TextIO

import orjson
from aiohttp import web

from service.background import every, running
from service.settings.model import LogSettings

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


def _forget_batch(ids: weakref.ref[RequestIds]) -> None:
    alive = ids()
    if alive is not None:
        alive._batch, alive._used = "", 0


UNMATCHED = "<unmatched>"
ID_BATCH = 256
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """The id a request is known by: a sane incoming X-Request-ID, or a fresh one.

    Fresh ids are 128 random bits from the OS (32 hex digits, like a uuid4), so an id says
    nothing about how many requests a worker has served. They are drawn ID_BATCH at a
    time, one system call per batch; a forked child drops its parent's batch, or two
    workers would hand out the same ids.
    """

    def __init__(self) -> None:
        self._batch = ""
        self._used = 0
        alive = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_batch(alive))

    def fresh(self) -> str:
        start = self._used
        if start >= len(self._batch):
            self._batch, start = secrets.token_hex(16 * ID_BATCH), 0
        self._used = start + 32
        return self._batch[start : start + 32]

    def of(self, request: web.Request) -> str:
        incoming = request.headers.get(REQUEST_ID_HEADER)
        if incoming is not None and _REQUEST_ID_RE.match(incoming):
            return incoming
        return self.fresh()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddress:
    """The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy.

    Only what parses as an IP address is believed, and it is logged as parsed: anything
    else in the header is the client's own text, which must not reach the access log.
    """

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or "-"
        if not self._trusted:
            return peer
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded:
            return peer
        nearest = _address(peer)
        if nearest is None or not self._is_trusted(nearest):
            return peer
        # Walk from the nearest hop outwards; the first untrusted address is the client.
        # A hop that is no address ends the walk at the last proxy we trust.
        for hop in reversed(forwarded.split(",")):
            address = _address(hop)
            if address is None:
                break
            nearest = address
            if not self._is_trusted(address):
                break
        return str(nearest) if nearest is not None else peer


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)


ACCESS_LOGGER = "service.access"
FLUSH_SECONDS = 0.25
FLUSH_LINES = 256
_ESCAPED_ENTRIES = 1024  # distinct routes and client addresses remembered


class AccessLog:
    """One line per request, written in batches.

    Through `logging` (a LogRecord, a filter, a formatter, one write per line) an access
    line cost a third of a cache hit in the benchmark. Here a request appends one tuple;
    `flush` turns the batch into lines: `access_log_ctx` every FLUSH_SECONDS, a full
    batch at once, and shutdown the rest. A line is assembled from its parts, not encoded
    as an object: methods, routes (escaped once each), statuses, numbers and request ids
    (a checked alphabet) need no escaping, and addresses are escaped once each. The lines
    have the shape of every other log line (JsonFormatter's keys, or TEXT_FORMAT), so log
    pipelines see no seam.
    """

    def __init__(self, settings: LogSettings, stream: TextIO | None = None) -> None:
        self.enabled = settings.access and logging.getLevelName(settings.level) <= logging.INFO
        self._json = settings.format == "json"
        self.stream = stream  # None: sys.stderr at write time, like the logging handler
        self._pending: list[tuple[float, str, str, int, float, str, str]] = []
        self._second = -1
        self._stamp = ""
        self._millis = -1
        self._time_text = ""
        self._escaped: dict[str, str] = {}  # route or address -> its JSON string literal
        self._json_parts: dict[tuple[str, str, int], tuple[str, str]] = {}

    def _time(self, now: float) -> str:
        millis = int(now * 1000)
        if millis == self._millis:
            return self._time_text  # a batch holds many lines per millisecond
        self._millis = millis
        second, fraction = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            if self._json:
                self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._time_text = (
            f"{self._stamp}.{fraction:03d}+00:00" if self._json else f"{self._stamp},{fraction:03d}"
        )
        return self._time_text

    def record(
        self, method: str, route: str, status: int, seconds: float, remote: str, rid: str
    ) -> None:
        """Keep the request's facts for the next flush: the request path pays an append."""
        self._pending.append((time.time(), method, route, status, seconds, remote, rid))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()

    def _literal(self, text: str) -> str:
        literal = self._escaped.get(text)
        if literal is None:
            if len(self._escaped) >= _ESCAPED_ENTRIES:
                self._escaped.clear()
            literal = self._escaped[text] = orjson.dumps(text).decode()
        return literal

    def _parts(self, method: str, route: str, status: int) -> tuple[str, str]:
        """The JSON line around its variable parts, made once per method, route and status."""
        parts = self._json_parts.get((method, route, status))
        if parts is None:
            quoted = self._literal(route)
            parts = self._json_parts[(method, route, status)] = (
                f'","level":"INFO","logger":"{ACCESS_LOGGER}",'
                f'"message":"{method} {quoted[1:-1]} {status} ',
                f'","method":"{method}","route":{quoted},"status":{status},"duration_ms":',
            )
        return parts

    def _line(
        self,
        now: float,
        method: str,
        route: str,
        status: int,
        seconds: float,
        remote: str,
        rid: str,
    ) -> str:
        stamp = self._time(now)
        ms = f"{seconds * 1000:.2f}"
        if not self._json:
            message = f"{method} {route} {status} {ms}ms"
            return f"{stamp} INFO    {ACCESS_LOGGER} [{rid}] {message} {remote}\n"
        head, tail = self._parts(method, route, status)
        return (
            f'{{"time":"{stamp}{head}{ms}ms","request_id":"{rid}{tail}{ms},'
            f'"remote":{self._literal(remote)}}}\n'
        )

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        text = "".join([self._line(*entry) for entry in pending])
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not fail requests
            pass


ACCESS_LOG = web.AppKey("access_log", AccessLog)


async def access_log_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: write batched access lines every FLUSH_SECONDS; the rest at shutdown."""
    access = app[ACCESS_LOG]
    async with running(every(FLUSH_SECONDS, access.flush), "access-log"):
        yield
    access.flush()
