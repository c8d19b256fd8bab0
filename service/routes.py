"""The URL table, readable top to bottom."""

from __future__ import annotations

from aiohttp import web

from service.handlers import health, users


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/health/live", health.live, allow_head=False),
            web.get("/health/ready", health.ready, allow_head=False),
            web.get("/users/{user_id}", users.get_user, allow_head=False),
        ]
    )
