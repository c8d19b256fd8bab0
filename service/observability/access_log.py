"""The access log: one line per request, written in batches, in the shape of every other
log line (`logging_setup`'s JSON keys or TEXT_FORMAT), so log pipelines see no seam."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TextIO

import orjson
from aiohttp import web
from opentelemetry.trace import SpanContext, get_current_span

from service.background import every, running
from service.settings.model import LogSettings

ACCESS_LOGGER = "service.access"
FLUSH_SECONDS = 0.25
FLUSH_LINES = 256
_ESCAPED_ENTRIES = 1024  # distinct routes and client addresses remembered

# What a request leaves for the next flush: time, method, route, status, seconds, address,
# id, and its span's context when tracing is on.
Entry = tuple[float, str, str, int, float, str, str, SpanContext | None]


class AccessLog:
    """One line per request, written in batches.

    Not through `logging`: a LogRecord, a filter, a formatter and a write per line cost a
    large share of a cache hit's time. Here a request appends one tuple; `flush` turns the
    batch into lines: `access_log_ctx` every FLUSH_SECONDS, a full batch at once, and
    shutdown the rest.
    """

    def __init__(self, settings: LogSettings) -> None:
        self.enabled = settings.access and logging.getLevelName(settings.level) <= logging.INFO
        self.stream: TextIO | None = None  # None: sys.stderr at write time, like logging's
        self._format = AccessLineFormat(json=settings.format == "json")
        self._pending: list[Entry] = []

    def record(
        self, method: str, route: str, status: int, seconds: float, remote: str, rid: str
    ) -> None:
        """Keep the request's facts for the next flush: the request path pays an append."""
        self._pending.append((time.time(), method, route, status, seconds, remote, rid, None))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()

    def record_traced(
        self, method: str, route: str, status: int, seconds: float, remote: str, rid: str
    ) -> None:
        """`record`, and the current span's ids (the middleware picks this one once, when
        tracing is on): the ids are spelled out at flush, off the request path."""
        span = get_current_span().get_span_context()
        self._pending.append((time.time(), method, route, status, seconds, remote, rid, span))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        line = self._format.line
        text = "".join([line(*entry) for entry in pending])
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not fail requests
            pass


class AccessLineFormat:
    """An access line assembled from its parts, not encoded as an object: methods, routes
    (escaped once each), statuses, numbers and request ids (a checked alphabet) need no
    escaping, and addresses are escaped once each."""

    def __init__(self, *, json: bool) -> None:
        self._json = json
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

    def line(
        self,
        now: float,
        method: str,
        route: str,
        status: int,
        seconds: float,
        remote: str,
        rid: str,
        span: SpanContext | None,
    ) -> str:
        stamp = self._time(now)
        ms = f"{seconds * 1000:.2f}"
        if not self._json:
            message = f"{method} {route} {status} {ms}ms"
            return f"{stamp} INFO    {ACCESS_LOGGER} [{rid}] {message} {remote}\n"
        head, tail = self._parts(method, route, status)
        ids = ""
        if span is not None and span.is_valid:
            ids = f',"trace_id":"{span.trace_id:032x}","span_id":"{span.span_id:016x}"'
        return (
            f'{{"time":"{stamp}{head}{ms}ms","request_id":"{rid}{tail}{ms},'
            f'"remote":{self._literal(remote)}{ids}}}\n'
        )


ACCESS_LOG = web.AppKey("access_log", AccessLog)


async def access_log_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: write batched access lines every FLUSH_SECONDS; the rest at shutdown."""
    access = app[ACCESS_LOG]
    async with running(every(FLUSH_SECONDS, access.flush), "access-log"):
        yield
    access.flush()
