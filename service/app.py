"""The application factory: the one place that wires settings, clients, the middleware and routes.

`adev runserver service/app.py`, gunicorn (`service.app:create_app()`), `python -m service`
and the tests all build the app here. Nothing connects at import time: clients open in
`cleanup_ctx` generators when the app starts and close when it stops.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from service.cache.backends import cache_ctx
from service.cache.response_cache import RESPONSE_CACHE
from service.cache.stats import CACHE_STATS, CacheStats
from service.domain.cursors import create_cursors
from service.domain.use_cases import ORDER_USE_CASES, USER_USE_CASES, OrderUseCases, UserUseCases
from service.http.auth import TokenVerifier
from service.http.compression import COMPRESSION, Compression
from service.http.cors import Cors
from service.http.handlers.docs import OPENAPI_DOCUMENT
from service.http.limits import IN_FLIGHT, MAX_BODY_BYTES, InFlight, handler_args
from service.http.middlewares import REQUEST_CONTEXT, RequestContext, request_middleware
from service.http.openapi import build_document
from service.http.routes import ENDPOINTS, ROUTE_POLICIES, setup_routes
from service.lifecycle import LIFECYCLE, Lifecycle, freeze_startup_objects, shut_down
from service.observability.access_log import ACCESS_LOG, AccessLog, access_log_ctx
from service.observability.client_address import ClientAddress
from service.observability.database_timer import DatabaseTimer
from service.observability.logging_setup import configure_logging
from service.observability.metrics import METRICS, Metrics, create_metrics, metrics_ctx
from service.observability.request_ids import RequestIds
from service.observability.scrape import metrics_server_ctx
from service.observability.tracing import (
    TRACER,
    TRACER_PROVIDER,
    create_tracer,
    create_tracer_provider,
    mongo_command_tracer,
    record_retry,
    tracing_ctx,
)
from service.settings.loading import load_settings
from service.settings.model import SETTINGS, ConfigError, Settings
from service.storage.mongo import MONGO, MONGO_LISTENERS, CommandListener, mongo_ctx
from service.storage.orders import OrderQueries
from service.storage.retry import RETRY_POLICY, retry_policy
from service.storage.users import UserQueries


def settings_or_exit() -> Settings:
    """Load settings; on a bad value print its one-line reason and exit 2, no traceback."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"user-service: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _observability(app: web.Application, settings: Settings) -> Metrics:
    """Traces when an OTLP endpoint is set (first in, so their exporter closes last),
    metrics (samples shared across workers, their own port) and the access log."""
    if settings.tracing:
        app[TRACER_PROVIDER] = provider = create_tracer_provider()
        app[TRACER] = create_tracer(provider)
        app.cleanup_ctx.append(tracing_ctx)
    app[METRICS] = metrics = create_metrics(app)
    app[ACCESS_LOG] = AccessLog(settings.log)
    app.cleanup_ctx.extend([access_log_ctx, metrics_ctx, metrics_server_ctx])
    return metrics


def _http(app: web.Application, settings: Settings, metrics: Metrics) -> None:
    """The request middleware's context, the route table, and the document built from it."""
    app[LIFECYCLE] = Lifecycle()
    app[COMPRESSION] = Compression(settings.compression)
    app[IN_FLIGHT] = InFlight(settings.server.max_in_flight)
    app[REQUEST_CONTEXT] = RequestContext(
        server=settings.server,
        policies=ROUTE_POLICIES,
        request_ids=RequestIds(),
        metrics=metrics,
        access_log=app[ACCESS_LOG],
        client_address=ClientAddress(settings.log.trusted_proxies),
        tokens=TokenVerifier(settings.auth),
        in_flight=app[IN_FLIGHT],
        deadline_seconds=settings.request.deadline_seconds,
        compression=app[COMPRESSION],
        cors=Cors(settings.cors),
        tracer=app.get(TRACER),
    )
    app.middlewares.append(request_middleware(app[REQUEST_CONTEXT]))
    app.on_shutdown.append(shut_down)
    app[OPENAPI_DOCUMENT] = orjson.dumps(build_document(ENDPOINTS, settings))
    setup_routes(app)


def _storage(app: web.Application, settings: Settings, metrics: Metrics) -> None:
    """The MongoDB client (timed by the metrics, traced when tracing is on) and the one
    retry policy for its calls."""
    listeners: list[CommandListener] = [DatabaseTimer(metrics)]
    app[MONGO_LISTENERS] = listeners
    app[RETRY_POLICY] = retry_policy(settings.retry, settings.mongo)
    app[RETRY_POLICY].hooks.append(metrics.retry)
    if (tracer := app.get(TRACER)) is not None:
        listeners.append(mongo_command_tracer(tracer))
        app[RETRY_POLICY].hooks.append(record_retry)
    app.cleanup_ctx.append(mongo_ctx)


def _cache(app: web.Application, metrics: Metrics) -> None:
    """The response cache (memory, Redis or none, by settings), counted by the metrics."""
    app[CACHE_STATS] = CacheStats(hooks=[metrics.cache_event])
    app.cleanup_ctx.append(cache_ctx)


async def use_cases_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the use cases, over the queries, the cache (if any) and the cursors."""
    cursors = create_cursors(app[SETTINGS].paging)
    mongo, policy = app[MONGO], app[RETRY_POLICY]
    users, orders = UserQueries(mongo, policy), OrderQueries(mongo, policy)
    cache = app.get(RESPONSE_CACHE)
    app[USER_USE_CASES] = UserUseCases(users, orders, cache, cursors)
    app[ORDER_USE_CASES] = OrderUseCases(users, orders, cache, cursors)
    yield


def create_app(settings: Settings | None = None) -> web.Application:
    """The app, layer by layer; each layer adds its own cleanup contexts, opened in this
    order at start-up and closed in reverse."""
    settings = settings or settings_or_exit()
    configure_logging(settings.log, traced=settings.tracing)
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        handler_args=handler_args(settings.server),
    )
    app[SETTINGS] = settings
    metrics = _observability(app, settings)
    _http(app, settings, metrics)
    _storage(app, settings, metrics)
    _cache(app, metrics)
    app.cleanup_ctx.append(use_cases_ctx)
    app.cleanup_ctx.append(freeze_startup_objects)  # last: everything start-up made
    return app
