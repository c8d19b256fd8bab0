"""The id every log line of a request carries, and the X-Request-ID header that carries it.

The id lives in a context variable so that code far below the handlers (retries, cache
warnings) logs it without being handed the request.
"""

from __future__ import annotations

import contextvars
import os
import re
import secrets
import weakref

from aiohttp import web

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

ID_BATCH = 256
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _forget_batch(ids: weakref.ref[RequestIds]) -> None:
    alive = ids()
    if alive is not None:
        alive.forget_batch()


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

    def forget_batch(self) -> None:
        """Draw a new batch for the next id (a forked child must: its parent hands out the
        rest of this one)."""
        self._batch, self._used = "", 0

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
