"""Process-level state the probes report, and graceful shutdown.

Under gunicorn (aiohttp's stock worker), SIGTERM stops accepting at once: the pod's
`preStop` sleep and the front's health checks take it out of rotation first (README,
Rolling deploys). `python -m service` drains on its own: readiness turns 503 at once, it
keeps serving for `shutdown.drain_seconds`, then stops accepting. Under both, once aiohttp
shuts the app down (`on_shutdown`), readiness is 503 and every request in flight has at
most `shutdown.graceful_timeout_seconds` left (each is bounded by its deadline anyway),
after which it answers 503; then the cleanup contexts close the Motor and Redis clients.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from service.http.limits import IN_FLIGHT
from service.settings.model import SETTINGS

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    shutting_down: bool = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


async def drain(app: web.Application) -> None:
    """`python -m service` on SIGTERM, before it stops accepting: readiness turns 503 at
    once and the server keeps serving for `shutdown.drain_seconds`, so that a balancer
    without retries loses nothing during a roll."""
    seconds = app[SETTINGS].shutdown.drain_seconds
    app[LIFECYCLE].shutting_down = True
    log.info("shutdown requested: readiness is 503, draining for %.1fs", seconds)
    await asyncio.sleep(seconds)


async def shut_down(app: web.Application) -> None:
    """on_shutdown (aiohttp has stopped accepting): readiness 503, and a request still
    running at the graceful timeout answers 503. aiohttp waits its shutdown timeout for
    handlers and then cancels them without an answer, and under gunicorn that timeout is
    95% of graceful_timeout: cutting them off at the graceful timeout leaves the rest of it
    for closing the clients."""
    app[LIFECYCLE].shutting_down = True
    seconds = app[SETTINGS].shutdown.graceful_timeout_seconds
    asyncio.get_running_loop().call_later(seconds, app[IN_FLIGHT].cut_off)


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
