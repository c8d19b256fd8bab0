"""The baseline: bare aiohttp answering GET /users/{user_id} with a fixed JSON body.

Same worker class as the service, a body of the service's typical size (BODY_BYTES), and
nothing else: the ceiling the service is measured against. gunicorn also reads this module
as its config (`--config python:bench.baseline_app`); it sets nothing, so the command
line holds every setting.
"""

from __future__ import annotations

import os

from aiohttp import web


def fixed_body() -> bytes:
    """A JSON body of BODY_BYTES bytes (the service's typical aggregate size)."""
    size = int(os.environ.get("BODY_BYTES", "1100"))
    filler = max(0, size - len('{"user":{},"orders":[],"pad":""}'))
    return ('{"user":{},"orders":[],"pad":"' + "x" * filler + '"}').encode()


def create_app() -> web.Application:
    body = fixed_body()

    async def get_user(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/users/{user_id}", get_user)
    return app
