"""The request pipeline, wrapped around each route's handler when the route is added.

request id → metrics and access log → error rendering → compression and CORS headers →
head limits → CORS preflight → authentication → the body, read under its timeout →
in-flight bound → the route's cached answer, or else the deadline → handler. Each concern
lives in its own module (request_ids, metrics, access_log, problems, compression, cors,
limits, auth, deadlines); this module only sequences them.

It is not an aiohttp middleware. An app with middlewares also gets aiohttp's own
`_fix_request_current_app` layer, so that was two coroutine frames per request, and the
route's labels, metric keys and needed scope were looked up on every request. `wrap`
resolves those once per route (service/http/routes.py adds every route through it), and the
pipeline is one coroutine frame around the handler: on a cache hit, every call and frame
here is a measurable share of the request (README, Performance). What the router cannot
match (404, 405) reaches the same pipeline through unmatched.UnmatchedResource.
"""

from __future__ import annotations

import asyncio
from asyncio import current_task
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from service.domain.errors import Unavailable
from service.http.auth import TokenVerifier, authorize
from service.http.compression import Compression
from service.http.cors import Cors
from service.http.deadlines import Deadlines
from service.http.limits import InFlight, check_head, receive_body
from service.http.problems import render_error
from service.http.responses import STANDARD_HEADERS, Representation
from service.observability.access_log import AccessLog
from service.observability.client_address import ClientAddress
from service.observability.metric_specs import KNOWN_METHODS, UNMATCHED
from service.observability.metrics import Metrics, RequestSeries
from service.observability.request_ids import REQUEST_ID_HEADER, RequestIds, request_id_var
from service.server.connections import connection_of
from service.settings.model import ServerSettings

_LATE = "The request did not complete in time; retry shortly."
# A route's answer from a cache that does not wait (a memory hit), or None when it cannot.
Answer = Callable[[web.Request], web.StreamResponse | None]


@dataclass(frozen=True, slots=True)
class Policy:
    """What the pipeline does around a route besides running it: the route table
    (service/http/routes.py) gives each route one, and the OpenAPI document reads it too."""

    # A bearer token, when tokens are configured: the write scope for writes, the read
    # scope for reads when `auth.reads` says so (TokenVerifier.required_scope).
    token: bool = True
    # Under the in-flight bound and the deadline; probes and scrapes are not: they carry
    # their own bounds, and must answer when the service is saturated (that is when they
    # matter).
    bounded: bool = True
    # Counted in metrics and written to the access log; scrapes are not: they would drown
    # the requests.
    observed: bool = True


@dataclass(frozen=True, slots=True)
class Facts:
    """What the pipeline needs to know about a request's route, resolved once per route."""

    method: str  # the label in metrics and the access log (OTHER for unknown methods)
    series: RequestSeries | None  # None: not counted or logged (scrapes)
    scope: str | None  # the token scope required, None when none is
    bounded: bool  # under the in-flight bound and the deadline


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything the pipeline needs, resolved once per app instead of once per request."""

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
    wrapped: set[Handler] = field(default_factory=set)  # what `wrap` returned: routes.py checks

    def facts(self, method: str, route: str, policy: Policy) -> Facts:
        """The facts for `method` on `route` under `policy`."""
        label = method if method in KNOWN_METHODS else "OTHER"
        return Facts(
            method=label,
            series=self.metrics.series(label, route) if policy.observed else None,
            scope=self.tokens.required_scope(method) if policy.token else None,
            bounded=policy.bounded,
        )

    def wrap(
        self,
        handler: Handler,
        method: str,
        route: str,
        policy: Policy | Callable[[str], Policy],
        cached: Answer | None = None,
    ) -> Handler:
        """`handler` with the pipeline around it, for `method` (`*`: any) on `route`.

        `policy` is the route's, or a function of the request's path for the unmatched
        route. A route for any method, and the unmatched one, resolve their facts per
        request. `cached` answers first when it can: it never suspends, so it runs inside
        the in-flight bound without a deadline of its own (nothing can overrun while the
        event loop is ours), and a cache hit skips the deadline's bookkeeping.
        """
        fixed = (
            self.facts(method, route, policy)
            if isinstance(policy, Policy) and method != hdrs.METH_ANY
            else None
        )
        # OPTIONS is never routed, so only the router's 405 can be a preflight.
        preflights = route == UNMATCHED
        pipeline, request_ids, server = self, self.request_ids, self.server
        compression, cors, access_log = self.compression, self.cors, self.access_log
        in_flight = self.in_flight

        async def pipelined(request: web.Request) -> web.StreamResponse:
            facts = fixed or pipeline.facts(
                request.method,
                route,
                policy if isinstance(policy, Policy) else policy(request.path),
            )
            request_id = request_ids.of(request)
            context = request_id_var.set(request_id)
            connection = connection_of(request)
            series = facts.series
            if series is not None:
                series.started()
            started = perf_counter()
            status = 500  # what a cancelled request (the client went away) is counted as
            try:
                try:
                    check_head(request, server)
                    preflight = None
                    if preflights and cors.enabled and request.method == "OPTIONS":
                        # Before authentication: a browser's preflight never carries credentials.
                        preflight = cors.preflight(request)
                    if preflight is not None:
                        response: web.StreamResponse = preflight
                    else:
                        if facts.scope is not None:
                            authorize(request, pipeline.tokens, facts.scope)
                        if not facts.bounded:
                            if connection is not None:
                                connection.mark_busy()
                            response = await handler(request)
                        else:
                            # A slot is for work, not for waiting on a client: the body first.
                            if request.body_exists:
                                await receive_body(request, server.body_timeout_seconds)
                            if connection is not None:
                                connection.mark_busy()
                            in_flight.take()
                            try:
                                answer = None if cached is None else cached(request)
                                if answer is not None:
                                    response = answer
                                else:
                                    response = await pipeline._in_time(request, handler)
                            finally:
                                in_flight.current -= 1
                except web.HTTPException as error:
                    if error.status < 400:
                        status = error.status
                        raise  # redirects and the like leave as aiohttp renders them
                    response = render_error(request, error)
                except Exception as error:  # noqa: BLE001 - rendered as problem+json, never leaked
                    response = render_error(request, error)
                status = response.status
                headers = response.headers
                if type(response) is not Representation:  # a cached one has its headers
                    compression.apply(request, response)
                    headers.update(STANDARD_HEADERS)
                headers[REQUEST_ID_HEADER] = request_id
                if cors.enabled:
                    cors.decorate(request, headers)
                return response
            finally:
                if connection is not None:
                    connection.mark_idle()  # what is left is writing: evictable again
                if series is not None:
                    seconds = perf_counter() - started
                    series.finished(status, seconds)
                    if access_log.enabled:
                        remote = pipeline.client_address.of(request)
                        access_log.record(facts.method, route, status, seconds, remote, request_id)
                request_id_var.reset(context)

        self.wrapped.add(pipelined)
        return pipelined

    async def _in_time(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The handler under the deadline: 503 when the watchdog cuts it off."""
        task = current_task()
        assert task is not None  # aiohttp runs every request in a task
        deadlines = self.deadlines
        deadline = deadlines.enter(task)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not deadlines.overran(task):
                raise  # the client went away, or the server is stopping
            raise Unavailable(_LATE) from None
        finally:
            deadlines.leave(task, deadline)


PIPELINE = web.AppKey("pipeline", Pipeline)
