"""The request path: one aiohttp middleware around every handler, the router's 404/405 too.

In: request id, metrics and the access log, head limits (414/431), CORS preflight,
authentication, the body (read under its timeout before a slot is taken), the in-flight
bound, the deadline (which every database attempt's budget reads: no timer per request).
Out: any error as problem+json, gzip, the standard headers, the request id and CORS.

One middleware rather than one per concern: every layer of aiohttp's chain is another
coroutine frame and handler partial per request, a measurable share of a cache hit
(README, Performance). Each concern is still a function or class of its own module
(request_ids, metrics, access_log, problems, compression, cors, limits, auth); this one
only sequences them. What a route needs (its metric series, token scope, bounds) is
resolved once per route from the route table's policies, keyed by the matched route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from service.domain.errors import Unavailable
from service.http.auth import TokenVerifier, authorize
from service.http.compression import Compression
from service.http.cors import Cors
from service.http.limits import InFlight, check_head, receive_body
from service.http.problems import render_error
from service.http.responses import STANDARD_HEADERS
from service.http.routes import Policy, RoutePolicies
from service.observability.access_log import AccessLog
from service.observability.client_address import ClientAddress
from service.observability.metric_specs import KNOWN_METHODS, UNMATCHED
from service.observability.metrics import Metrics, RequestSeries
from service.observability.request_ids import REQUEST_ID_HEADER, RequestIds, request_id_var
from service.settings.model import ServerSettings
from service.storage.retry import deadline_var

_CUT_OFF = "The service is shutting down; retry shortly."


@dataclass(frozen=True, slots=True)
class Facts:
    """What the middleware needs to know about a request's route."""

    method: str  # the label in metrics and the access log (OTHER for unknown methods)
    route: str  # the route's template, or UNMATCHED
    series: RequestSeries | None  # None: not counted or logged (scrapes)
    scope: str | None  # the token scope required, None when none is
    bounded: bool  # under the in-flight bound and the deadline


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything the middleware uses, built once per app by the factory."""

    server: ServerSettings
    policies: RoutePolicies
    request_ids: RequestIds
    metrics: Metrics
    access_log: AccessLog
    client_address: ClientAddress
    tokens: TokenVerifier
    in_flight: InFlight
    deadline_seconds: float
    compression: Compression
    cors: Cors
    tracer: Tracer | None = None  # None: tracing is off, and the middleware has no span code

    def facts(self, method: str, route: str, policy: Policy) -> Facts:
        label = method if method in KNOWN_METHODS else "OTHER"
        return Facts(
            method=label,
            route=route,
            series=self.metrics.series(label, route) if policy.observed else None,
            scope=self.tokens.required_scope(method) if policy.token else None,
            bounded=policy.bounded,
        )


def request_middleware(context: RequestContext) -> Middleware:
    """The middleware, over `context` (a middleware factory, as aiohttp's docs call it)."""
    known: dict[web.AbstractRoute, Facts] = {}  # per matched route: its facts, resolved once
    request_ids, in_flight = context.request_ids, context.in_flight
    deadline_seconds = context.deadline_seconds
    compression, cors, access_log = context.compression, context.cors, context.access_log
    server = context.server
    record = access_log.record if context.tracer is None else access_log.record_traced

    def facts_of(request: web.Request) -> Facts:
        match_info = request.match_info
        if match_info.http_exception is not None:  # the router's 404 or 405
            policy = context.policies.of_unmatched(request.path)
            return context.facts(request.method, UNMATCHED, policy)
        route = match_info.route
        found = known.get(route)
        if found is None:
            template = route.resource.canonical if route.resource is not None else UNMATCHED
            policy = context.policies.of_handler(route.handler)
            found = context.facts(request.method, template, policy)
            if route.method != hdrs.METH_ANY:  # a route for any method: per request
                known[route] = found
        return found

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        facts = facts_of(request)
        request_id = request_ids.of(request)
        token = request_id_var.set(request_id)
        series = facts.series
        if series is not None:
            series.started()
        started = perf_counter()
        status = 500  # what a cancelled request (the client went away) is counted as
        try:
            try:
                check_head(request, server)
                preflight = None
                if cors.enabled and request.method == "OPTIONS":
                    # Before authentication: a browser's preflight never carries credentials.
                    preflight = cors.preflight(request)
                if preflight is not None:
                    response: web.StreamResponse = preflight
                else:
                    if facts.scope is not None:
                        authorize(request, context.tokens, facts.scope)
                    if not facts.bounded:
                        response = await handler(request)
                    else:
                        # A slot is for work, not for waiting on a client: the body first.
                        if request.body_exists:
                            await receive_body(request, server.body_timeout_seconds)
                        task = request.task
                        in_flight.take(task)
                        # The deadline, read by every database attempt's budget (retry.py).
                        when = asyncio.get_running_loop().time() + deadline_seconds
                        deadline = deadline_var.set(when)
                        try:
                            response = await handler(request)
                        except asyncio.CancelledError:
                            if not in_flight.was_cut_off(task):
                                raise  # the client went away
                            raise Unavailable(_CUT_OFF) from None
                        finally:
                            deadline_var.reset(deadline)
                            in_flight.release(task)
            except web.HTTPException as error:
                if error.status < 400:
                    status = error.status
                    raise  # redirects and the like leave as aiohttp renders them
                response = render_error(request, error)
            except Exception as error:  # noqa: BLE001 - rendered as problem+json, never leaked
                response = render_error(request, error)
            status = response.status
            compression.apply(request, response)
            headers = response.headers
            headers.update(STANDARD_HEADERS)
            headers[REQUEST_ID_HEADER] = request_id
            if cors.enabled:
                cors.decorate(request, headers)
            return response
        finally:
            if series is not None:
                seconds = perf_counter() - started
                series.finished(status, seconds)
                if access_log.enabled:
                    remote = context.client_address.of(request)
                    record(facts.method, facts.route, status, seconds, remote, request_id)
            request_id_var.reset(token)

    if context.tracer is None:
        return middleware
    return traced(middleware, context.tracer, facts_of)


def traced(
    middleware: Middleware, tracer: Tracer, facts_of: Callable[[web.Request], Facts]
) -> Middleware:
    """`middleware` inside the request's SERVER span (HTTP semantic conventions), under the
    caller's `traceparent`. Not opentelemetry-instrumentation-aiohttp-server's: it needs its
    `instrument()`, which replaces `aiohttp.web.Application` process-wide (README, Tracing)."""

    @web.middleware
    async def traced_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        facts = facts_of(request)
        method = facts.method if facts.method != "OTHER" else "_OTHER"
        url = request.url
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "server.address": url.host or "",
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        name = "HTTP" if method == "_OTHER" else method
        if facts.route != UNMATCHED:
            attributes["http.route"] = facts.route
            name = f"{name} {facts.route}"
        with tracer.start_as_current_span(
            name,
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await middleware(request, handler)
            except web.HTTPException as answer:  # a redirect, rendered by aiohttp
                span.set_attribute("http.response.status_code", answer.status)
                raise
            except BaseException as error:  # the client went away (CancelledError)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise
            status = response.status
            span.set_attribute("http.response.status_code", status)
            if status >= 500:  # a 503 at the deadline too: the span is an error
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
            return response

    return traced_middleware


REQUEST_CONTEXT = web.AppKey("request_context", RequestContext)
