"""The gunicorn worker: aiohttp's uvloop worker plus the service's drain on SIGTERM.

aiohttp's worker stops accepting the moment SIGTERM arrives. Ours first turns readiness
503 and keeps serving for `shutdown.drain_seconds`, so that a load balancer has taken the
pod out of rotation before connections are refused.
"""

from __future__ import annotations

from types import FrameType

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker

from service.config import SETTINGS
from service.lifecycle import begin_shutdown


class Worker(GunicornUVLoopWebWorker):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.wsgi
        drain = 0.0
        if isinstance(app, web.Application) and SETTINGS in app:
            drain = app[SETTINGS].shutdown.drain_seconds
            begin_shutdown(app, drain)
        self.loop.call_later(drain, self._stop_serving)

    def _stop_serving(self) -> None:
        self.alive = False
        self._notify_waiter_done()
