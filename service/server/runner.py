"""The runner both servers use (`python -m service` and gunicorn's worker), so that
keep-alive, connection bounds and timeouts are the same under both.

aiohttp has no public hook for the protocol class, so `ServiceRunner` builds the server
aiohttp would, then serves it through `ConnectionServer` (service/server/connections.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from service.http.pipeline import PIPELINE
from service.server.connections import ConnectionServer
from service.server.guard import ConnectionGuard, connection_cap
from service.settings.model import SETTINGS


class ServiceRunner(web.AppRunner):
    """An AppRunner whose server is a `ConnectionServer` built from the app's settings."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        settings = self.app[SETTINGS]
        return ConnectionServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            guard=ConnectionGuard(connection_cap(settings.server, settings.mongo.max_pool_size)),
            pipeline=self.app[PIPELINE],
            header_timeout=settings.server.header_timeout_seconds,
            # The options aiohttp collected (keep-alive, parser limits, logger, ...).
            **base._kwargs,
        )


def make_runner(app: web.Application, **kwargs: Any) -> ServiceRunner:
    """The runner both servers use: keep-alive, access log and shutdown as the service wants."""
    settings = app[SETTINGS]
    return ServiceRunner(
        app,
        keepalive_timeout=settings.server.keepalive_timeout_seconds,
        access_log=None,  # the service writes its own structured access log
        shutdown_timeout=settings.shutdown.graceful_timeout_seconds + 1,  # see lifecycle.drain
        **kwargs,
    )
