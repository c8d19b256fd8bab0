"""The lean reference: the app issue #16 measured at 0.73-0.84x bare aiohttp.

Bare aiohttp plus the one middleware that issue describes: a request id, a counter, a
histogram sum, an access-log append, a dict lookup and an ETag check, answering with a
body of the baseline's size. None of the service's other concerns (auth, the in-flight
bound, metrics shared across workers, connection limits, CORS, compression). `make bench`
runs it beside the service's hits, so that the hit targets can be read against what the
issue's own reference design reaches on the same machine in the same run. gunicorn reads
this module as its (empty) config too, like bench/baseline_app.py.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bench.baseline_app import fixed_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app() -> web.Application:
    body = fixed_body()
    entries: dict[str, tuple[bytes, str]] = {}
    requests: collections.Counter[tuple[str, int]] = collections.Counter()
    seconds = [0.0]
    access: collections.deque[tuple[str, str, str, int, float]] = collections.deque(maxlen=10_000)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        response = await handler(request)
        elapsed = time.perf_counter() - started
        requests[(request.method, response.status)] += 1
        seconds[0] += elapsed
        access.append((request_id, request.method, request.path, response.status, elapsed))
        response.headers["X-Request-ID"] = request_id
        return response

    async def get_user(request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        entry = entries.get(user_id)
        if entry is None:
            entry = entries[user_id] = (body, f'"{len(entries)}"')
        data, etag = entry
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=data, content_type="application/json", headers={"ETag": etag})

    app = web.Application(middlewares=[observe])
    app.router.add_get("/users/{user_id}", get_user)
    return app
