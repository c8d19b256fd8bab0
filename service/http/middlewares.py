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
from dataclasses import dataclass
from time import perf_counter

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

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
                    access_log.record(
                        facts.method, facts.route, status, seconds, remote, request_id
                    )
            request_id_var.reset(token)

    return middleware


REQUEST_CONTEXT = web.AppKey("request_context", RequestContext)
