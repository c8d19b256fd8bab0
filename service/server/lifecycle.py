"""Process-level state the probes report, and the graceful shutdown both servers share.

On SIGTERM: readiness turns 503 at once; the server keeps serving (and accepting) for
`shutdown.drain_seconds`, so load balancers see the 503 and stop sending; then it stops
accepting, gives in-flight requests up to `shutdown.graceful_timeout_seconds`, runs the
cleanup contexts (closing the Motor and Redis clients) and exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from service.http.deadlines import DEADLINES
from service.settings.model import SETTINGS

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    shutting_down: bool = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


async def drain(app: web.Application) -> None:
    """SIGTERM's first steps, for both servers (python -m service and the gunicorn worker):
    readiness turns 503 at once, the server keeps serving for `shutdown.drain_seconds`,
    then every request in flight has at most the graceful timeout. The caller then stops
    accepting and runs the cleanup contexts (AppRunner.cleanup).

    aiohttp's own shutdown waits its timeout for handlers and then, for a handler that is
    not reading its body, as long again; bringing every deadline forward makes a request
    still busy at the end answer 503 in time, so the process exits within drain +
    graceful timeout.
    """
    shutdown = app[SETTINGS].shutdown
    app[LIFECYCLE].shutting_down = True
    log.info("shutdown requested: readiness is 503, draining for %.1fs", shutdown.drain_seconds)
    await asyncio.sleep(shutdown.drain_seconds)
    app[DEADLINES].bring_forward(shutdown.graceful_timeout_seconds)


async def mark_shutting_down(app: web.Application) -> None:
    """on_shutdown: servers that stop without `drain` (adev, plain run_app) still turn
    readiness 503."""
    app[LIFECYCLE].shutting_down = True


async def freeze_startup_objects(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, last: move everything start-up created out of the collector's way.

    The clients, routes and modules live as long as the process; left in the oldest
    generation, every full collection walks them all, and the slowest cache hits wait for
    it (README, Performance).
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
