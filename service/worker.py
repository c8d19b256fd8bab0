"""The gunicorn worker: aiohttp's uvloop worker plus the service's drain on SIGTERM.

aiohttp's worker stops accepting the moment SIGTERM arrives. Ours first turns readiness
503 and keeps serving for `shutdown.drain_seconds`, so that a load balancer has taken the
pod out of rotation before connections are refused.
"""

from __future__ import annotations

import asyncio
from types import FrameType

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker

from service.server.lifecycle import drain
from service.server.runner import make_runner
from service.settings.model import SETTINGS


class Worker(GunicornUVLoopWebWorker):
    """aiohttp's uvloop worker, with the service's drain and its own graceful timeout.

    aiohttp's worker gives in-flight requests 95% of gunicorn's graceful_timeout, counted
    after our drain (and, for a handler not reading its body, as long again), so it could
    outlast gunicorn's limit and end in SIGKILL. Here requests get exactly
    `shutdown.graceful_timeout_seconds` after the drain (`lifecycle.drain`), and
    gunicorn.conf.py sets graceful_timeout to the drain plus that plus a margin.
    """

    _app: web.Application | None = None
    _draining: asyncio.Task[None] | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: object = self.wsgi  # type: ignore[has-type]  # gunicorn sets it, untyped
        if not isinstance(app, web.Application) or SETTINGS not in app:
            return
        self._app = app

        async def runner() -> web.AppRunner:
            # aiohttp's worker awaits a coroutine function for its runner: the same runner
            # as python -m service, so keep-alive and connection bounds match.
            return make_runner(app, logger=self.log)

        self.wsgi = runner

    def run(self) -> None:
        # uvloop detaches a socket.socket it serves, so libuv closes the descriptor once; any
        # other object it closes again afterwards. gunicorn's listener wrappers are not
        # sockets, so each worker logged "Error while closing socket [Errno 9]" on exit.
        listeners: list[object] = self.sockets  # type: ignore[has-type]  # gunicorn, untyped
        self.sockets = [getattr(listener, "sock", listener) for listener in listeners]
        super().run()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is None:  # a second SIGTERM changes nothing
            self._draining = self.loop.create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        """The same drain as python -m service; then aiohttp's worker stops accepting and
        cleans up the runner."""
        if self._app is not None:
            await drain(self._app)
        self.alive = False
        self._notify_waiter_done()
