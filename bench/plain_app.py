"""The plain reference: the service's packages used the way their docs show, nothing more.

Three `@web.middleware` (a request id; an aioprometheus Counter `inc` and Histogram
`observe` per request, labelled by method, route and status; errors as problem+json),
then one of two reads, chosen by PLAIN_READ:

- `cache` (the hits): aiocache's `SimpleMemoryCache.get`, filled on first sight with
  the baseline's body (bench/baseline_app.fixed_body), answered with `web.Response`;
- `database` (the misses): bench/floor_app.py's read (Motor, `find_one` and `find` at
  once with `asyncio.gather`), wrapped in backoff's `on_exception` as its docs show.

No auth, in-flight bound, deadlines, CORS, compression, ETags or access log: what any
aiohttp app on these packages pays per request before it does anything of its own. The
service's hits and misses are judged against it (bench/targets.py). gunicorn reads this
module as its (empty) config too, like bench/baseline_app.py.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import backoff
from aiocache import SimpleMemoryCache
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aioprometheus.collectors import Counter, Histogram, Registry
from aioprometheus.renderer import render
from pymongo.errors import ConnectionFailure

from bench.baseline_app import fixed_body
from bench.floor_app import mongo_ctx, read_user

REQUEST_ID_HEADER = "X-Request-ID"
CACHE: web.AppKey[Any] = web.AppKey("cache")
REGISTRY = web.AppKey("registry", Registry)

logger = logging.getLogger("bench.plain_app")


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    value = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = value
    return response


def metrics_middleware(registry: Registry) -> Middleware:
    """A middleware factory: the collectors live in the app's registry, not at import."""
    requests = Counter("http_requests_total", "Requests answered.", registry=registry)
    seconds = Histogram("http_request_duration_seconds", "Time to answer.", registry=registry)

    @web.middleware
    async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # what a cancelled request counts as
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            resource = request.match_info.route.resource
            labels = {
                "method": request.method,
                "route": resource.canonical if resource is not None else "unmatched",
                "status": str(status),
            }
            requests.inc(labels)
            seconds.observe(labels, time.perf_counter() - started)

    return metrics


def _problem(status: int, title: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _problem(error.status, error.reason)
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return _problem(500, "Internal Server Error")


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CACHE] = SimpleMemoryCache()
    yield
    await app[CACHE].close()


async def get_cached(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    key = f"users/{request.match_info['user_id']}"
    body = await cache.get(key)
    if body is None:
        body = fixed_body()
        await cache.set(key, body)
    return web.Response(body=body, content_type="application/json")


@backoff.on_exception(backoff.expo, ConnectionFailure, max_tries=3)
async def read_with_retries(app: web.Application, user_id: str) -> bytes | None:
    return await read_user(app, user_id)


async def get_from_database(request: web.Request) -> web.Response:
    body = await read_with_retries(request.app, request.match_info["user_id"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    content, headers = render(request.app[REGISTRY], request.headers.getall(hdrs.ACCEPT, []))
    return web.Response(body=content, headers=headers)


def create_app() -> web.Application:
    registry = Registry()
    app = web.Application(middlewares=[request_id, metrics_middleware(registry), problems])
    app[REGISTRY] = registry
    if os.environ.get("PLAIN_READ", "cache") == "database":
        app.cleanup_ctx.append(mongo_ctx)
        app.router.add_get("/users/{user_id}", get_from_database)
    else:
        app.cleanup_ctx.append(cache_ctx)
        app.router.add_get("/users/{user_id}", get_cached)
    app.router.add_get("/metrics", get_metrics)
    return app
