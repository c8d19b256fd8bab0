"""Kubernetes probes: liveness does no I/O; readiness asks the database, within a bound."""

from __future__ import annotations

from aiohttp import web

from service.background import within
from service.http.problems import problem_response
from service.http.responses import json_response
from service.lifecycle import LIFECYCLE
from service.settings.model import SETTINGS
from service.storage.mongo import MONGO, PyMongoError


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 when this instance should get traffic; 503 naming what is missing otherwise."""
    if request.app[LIFECYCLE].shutting_down:
        return _not_ready("shutting down")
    mongo = request.app[MONGO]
    timeout = request.app[SETTINGS].health.ready_timeout_seconds
    try:
        await within(timeout, mongo.ping())
    except TimeoutError:
        return _not_ready(f"mongodb: no answer within {timeout:g}s")
    except PyMongoError as exc:
        # The class name says what kind of failure it was without echoing hosts or credentials.
        return _not_ready(f"mongodb: unreachable ({type(exc).__name__})")
    if not mongo.indexes_ready:
        return _not_ready("mongodb: indexes not yet created")
    return json_response({"status": "ok", "checks": {"mongodb": "ok"}})


def _not_ready(reason: str) -> web.Response:
    return problem_response(503, f"Not ready: {reason}.", headers={"Retry-After": "1"})
