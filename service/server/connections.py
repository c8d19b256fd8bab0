"""Connections: how long each may take to send its head, the cap's bookkeeping, and the
answers aiohttp's HTTP parser gives before any middleware could.

Both servers (`python -m service` and gunicorn's worker) build their runner with
`service.server.runner.make_runner`, so the bounds are the same under both. Its connections are
aiohttp's `RequestHandler` plus:

- the connection cap (`guard.ConnectionGuard`): each connection tells it when it is
  idle, busy or gone, and is evicted with a reset when a newer one needs its place;
- a header timeout: the request head must arrive within `server.header_timeout_seconds`
  of the connection opening or of its first byte after a response;
- problem+json, a request id, a metric and one WARNING line for requests the parser
  refuses (aiohttp's own answer is text/plain that echoes the input, with a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import http_exceptions, web
from aiohttp.web_request import BaseRequest

from service.http.problems import problem_response
from service.observability.metric_specs import UNMATCHED
from service.observability.request_ids import REQUEST_ID_HEADER
from service.server.guard import ConnectionGuard

if TYPE_CHECKING:  # the pipeline calls mark_busy and mark_idle: a runtime import would be a cycle
    from service.http.pipeline import Pipeline

log = logging.getLogger(__name__)

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

_PARSER_DETAILS = {
    400: "The request is not valid HTTP/1.1.",
    414: "The request line is too long.",
    415: "The body's Content-Encoding is not supported.",
    431: "The request headers are too large.",
    501: "This request method is not implemented.",
}


class Connection(web.RequestHandler):
    """aiohttp's per-connection protocol, with the cap, the header timeout and
    problem+json answers for what the parser refuses."""

    __slots__ = (
        "_awaiting_head",
        "_guard",
        "_head_timer",
        "_header_timeout",
        "_line_length",
        "_line_seen",
        "_pipeline",
    )  # fmt: skip

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: ConnectionGuard,
        pipeline: Pipeline,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._pipeline = pipeline
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._line_seen = 0
        self._line_length = -1  # not seen yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()
            return
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:  # a body, or the next request pipelined behind one
            super().data_received(data)
            return
        if self._line_length < 0:
            # Where the request line ends tells a long line (414) from a long header (431).
            end = data.find(b"\n")
            self._line_seen += len(data) if end < 0 else end
            if end >= 0:
                self._line_length = self._line_seen
        super().data_received(data)
        if self._messages:  # a whole head was parsed (or refused)
            self._awaiting_head = False
            self._cancel_head_timer()
        elif self._head_timer is None and data:
            self._start_head_timer()

    def evict(self) -> None:
        """Close now with a reset, dropping unsent data: after a plain close, the kernel
        would keep the socket and its unsent response until a slow reader took them."""
        transport = self.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.force_close()
        if transport is not None:
            transport.abort()

    def mark_busy(self) -> None:
        """The request's body has arrived and its work begins: not to be evicted."""
        self._guard.busy(self)

    def mark_idle(self) -> None:
        """What is left is writing: a client that reads slowly may be evicted."""
        self._guard.idle(self)

    def log_access(
        self, request: BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        """aiohttp calls this once a response is written (the service logs its own)."""
        if response.status == 408:
            # The client stalled mid-body: close now rather than linger for the rest.
            self.force_close()
        self._awaiting_head = True
        self._line_seen, self._line_length = 0, -1

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._messages:
            log.debug("closing a connection whose request head did not arrive in time")
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser refused (or a handler failure aiohttp caught), answered as
        problem+json without echoing the input, counted and logged in one line."""
        if request.writer.output_size > 0:  # part of a response is out: nothing to add
            raise ConnectionError("response already started")
        pipeline = self._pipeline
        status = self._status_of(status, exc)
        request_id = pipeline.request_ids.fresh()
        remote = request.remote or "-"
        if status >= 500 and not isinstance(exc, http_exceptions.HttpProcessingError):
            log.error("request_id=%s: failed outside the pipeline", request_id, exc_info=exc)
            detail = "An unexpected error occurred; it has been logged."
        else:
            log.warning(
                "refused a malformed request from %s: %d %s (request_id=%s)",
                remote,
                status,
                type(exc).__name__,
                request_id,
            )
            detail = _PARSER_DETAILS.get(status, _PARSER_DETAILS[400])
        response = problem_response(status, detail, headers={REQUEST_ID_HEADER: request_id})
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.force_close()
        pipeline.metrics.request_started("OTHER", UNMATCHED)
        pipeline.metrics.request_finished("OTHER", UNMATCHED, status, 0.0)
        if pipeline.access_log.enabled:
            pipeline.access_log.record("OTHER", UNMATCHED, status, 0.0, remote, request_id)
        return response

    def _status_of(self, status: int, exc: BaseException | None) -> int:
        if isinstance(exc, http_exceptions.BadHttpMethod):
            return 501  # RFC 9110 §9.1: a method the server does not implement
        if isinstance(exc, http_exceptions.LineTooLong):
            line_ok = 0 <= self._line_length <= self.max_line_size
            return 431 if line_ok else 414
        if isinstance(exc, http_exceptions.ContentEncodingError):
            return 415  # RFC 9110 §15.5.16: unsupported content coding
        return status


class ConnectionServer(web.Server):
    """aiohttp's protocol factory, making `Connection`s that share one guard."""

    def __init__(
        self,
        handler: Any,
        *,
        guard: ConnectionGuard,
        pipeline: Pipeline,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard
        self._pipeline = pipeline
        self._header_timeout = header_timeout

    def __call__(self) -> Connection:
        return Connection(
            self,
            loop=self._loop,
            guard=self.guard,
            pipeline=self._pipeline,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )


def connection_of(request: web.Request) -> Connection | None:
    """The request's connection when it is a `Connection` (None under other servers)."""
    protocol = request.protocol
    return protocol if isinstance(protocol, Connection) else None
