"""The one middleware every request passes through, in the order the concerns need.

request id → metrics and access log → error rendering → compression and CORS headers →
head limits → CORS preflight → authentication → the body, read under its timeout →
in-flight bound → deadline → handler. Each concern lives in its own module (logs, metrics,
errors, compression, cors, limits, auth, retry); this module only sequences them. It is one
middleware, not seven, because every aiohttp middleware layer is another coroutine frame and
partial per request: on a cache hit, seven layers cost more than the cache lookup (see
`make bench`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from service.auth import TokenVerifier, authorize
from service.compression import Compression
from service.config import ServerSettings
from service.connections import mark_busy
from service.cors import Cors
from service.errors import render_error
from service.limits import InFlight, at_capacity, check_head, receive_body
from service.logs import (
    REQUEST_ID_HEADER,
    AccessLog,
    ClientAddress,
    RequestIds,
    request_id_var,
    route_label,
)
from service.metrics import KNOWN_METHODS, Metrics
from service.responses import SERVER
from service.retry import Deadlines

# Probes and scrapes: exempt from the in-flight bound and the deadline (they carry their own
# bounds, and must answer when the service is saturated: that is when they matter).
_UNBOUNDED = ("/health/", "/metrics")
_SCRAPE = "/metrics"  # neither counted nor logged: scrapes would drown the requests


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything the middleware needs, resolved once per app instead of once per request."""

    server: ServerSettings
    deadlines: Deadlines
    request_ids: RequestIds
    metrics: Metrics
    access_log: AccessLog
    client_address: ClientAddress
    tokens: TokenVerifier
    in_flight: InFlight
    compression: Compression
    cors: Cors


PIPELINE = web.AppKey("pipeline", Pipeline)


@web.middleware
async def pipeline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag, observe and answer one request; every failure leaves as problem+json."""
    pipeline = request.app[PIPELINE]
    request_id = pipeline.request_ids.of(request)
    token = request_id_var.set(request_id)
    observed = request.path != _SCRAPE
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    route = route_label(request)
    if observed:
        pipeline.metrics.request_started(method, route)
    started = time.perf_counter()
    status = 500  # what a cancelled request (the client went away) is counted as
    try:
        try:
            response = await _guarded(request, handler, pipeline)
        except web.HTTPException as error:
            if error.status < 400:
                status = error.status
                raise  # redirects and the like leave as aiohttp renders them
            response = render_error(request, error)
        except Exception as error:  # noqa: BLE001 - rendered as problem+json, never leaked
            response = render_error(request, error)
        status = response.status
        pipeline.compression.apply(request, response)
        headers = response.headers
        headers[REQUEST_ID_HEADER] = request_id
        headers["X-Content-Type-Options"] = "nosniff"  # never let a browser sniff a type
        headers["Server"] = SERVER
        if pipeline.cors.enabled:
            pipeline.cors.decorate(request, headers)
        return response
    finally:
        if observed:
            seconds = time.perf_counter() - started
            pipeline.metrics.request_finished(method, route, status, seconds)
            if pipeline.access_log.enabled:
                pipeline.access_log.record(
                    method,
                    route,
                    status,
                    round(seconds * 1000, 2),
                    pipeline.client_address.of(request),
                    request_id,
                )
        request_id_var.reset(token)


async def _guarded(
    request: web.Request, handler: Handler, pipeline: Pipeline
) -> web.StreamResponse:
    check_head(request, pipeline.server)
    if request.method == "OPTIONS" and pipeline.cors.enabled:
        # Before authentication: a browser's preflight never carries credentials.
        preflight = pipeline.cors.preflight(request)
        if preflight is not None:
            return preflight
    if request.path.startswith(_UNBOUNDED):
        mark_busy(request)
        authorize(request, pipeline.tokens)
        return await handler(request)
    authorize(request, pipeline.tokens)
    # A slot is for work, not for waiting on a client: the body arrives first.
    await receive_body(request, pipeline.server.body_timeout_seconds)
    in_flight = pipeline.in_flight
    if in_flight.current >= in_flight.limit:
        raise at_capacity()
    in_flight.current += 1
    try:
        return await pipeline.deadlines.run(request, handler)
    finally:
        in_flight.current -= 1
