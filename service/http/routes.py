"""The URL table, readable top to bottom. The OpenAPI document is generated from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from msgspec import Struct

from service.domain.schemas import (
    Health,
    Order,
    OrderCreate,
    OrderPage,
    User,
    UserCreate,
    UserPage,
    UserPatch,
    UserWithOrders,
)
from service.http.handlers import docs, health, orders, users
from service.http.limits import expect_continue
from service.http.pipeline import PIPELINE, Answer, Policy
from service.http.unmatched import UnmatchedPolicy, UnmatchedResource, refuse
from service.observability.metric_specs import UNMATCHED
from service.observability.scrape import metrics_handler
from service.settings.model import SETTINGS, Settings


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link: how a success response leads to another operation's parameters."""

    name: str
    target: Handler
    # Parameter name (a header's as `header.If-Match`) -> runtime expression.
    parameters: tuple[tuple[str, str], ...]


def link(name: str, target: Handler, **parameters: str) -> Link:
    """A link filling `target`'s parameters from runtime expressions (`$response.body#/id`)."""
    return Link(name, target, tuple(parameters.items()))


def _docs_enabled(settings: Settings) -> bool:
    return settings.docs.enabled


def _metrics_on_api_port(settings: Settings) -> bool:
    return settings.metrics.port == 0


# What the pipeline does around each route (pipeline.Policy says what each flag means).
API = Policy()
PUBLIC = Policy(token=False)  # the published contract and its page
PROBE = Policy(token=False, bounded=False)
SCRAPE = Policy(token=False, bounded=False, observed=False)


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    ok: int = 200
    response: type[Struct] | None = None
    body: type[Struct] | None = None
    # Parameters beyond the path ones: "limit"/"after" (query), and request headers.
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    # Response headers of the success answer (ETag, Location), and where it leads.
    ok_headers: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    public: bool = True  # False: served, but not part of the documented API
    policy: Policy = API  # token, in-flight bound and deadline, metrics and access log
    served_if: Callable[[Settings], bool] | None = None  # None: always served
    # Answers from a cache without waiting, or None: then the handler runs (pipeline.py).
    cached: Answer | None = None


_USER_FROM_BODY = "$response.body#/id"
_IF_MATCH_FROM_ETAG = {"header.If-Match": "$response.header.ETag"}
ENDPOINTS = (
    Endpoint("POST", "/users", users.create_user, "Create a user", 201, User, UserCreate,
             headers=("Idempotency-Key",), errors=(409, 422), ok_headers=("Location",),
             links=(link("get_user", users.get_user, user_id=_USER_FROM_BODY),
                    link("patch_user", users.patch_user, user_id=_USER_FROM_BODY),
                    link("delete_user", users.delete_user, user_id=_USER_FROM_BODY),
                    link("create_order", orders.create_order, user_id=_USER_FROM_BODY),
                    link("list_orders", orders.list_orders, user_id=_USER_FROM_BODY))),
    Endpoint("GET", "/users", users.list_users, "Page through users", 200, UserPage,
             query=("limit", "after")),
    Endpoint("GET", "/users/{user_id}", users.get_user, "A user and their 100 newest orders",
             200, UserWithOrders, headers=("If-None-Match",), errors=(304, 404),
             ok_headers=("ETag",), cached=users.cached_user,
             links=(link("patch_user", users.patch_user, user_id="$response.body#/user/id",
                         **_IF_MATCH_FROM_ETAG),
                    link("delete_user", users.delete_user, user_id="$response.body#/user/id",
                         **_IF_MATCH_FROM_ETAG),
                    link("create_order", orders.create_order, user_id="$response.body#/user/id"),
                    link("list_orders", orders.list_orders, user_id="$response.body#/user/id"))),
    Endpoint("PATCH", "/users/{user_id}", users.patch_user, "Change a user's name or email",
             200, User, UserPatch, headers=("If-Match", "If-None-Match"),
             errors=(404, 409, 412), ok_headers=("ETag",),
             links=(link("get_user", users.get_user, user_id=_USER_FROM_BODY),)),
    Endpoint("DELETE", "/users/{user_id}", users.delete_user, "Delete a user and their orders",
             204, headers=("If-Match", "If-None-Match"), errors=(404, 412)),
    Endpoint("POST", "/users/{user_id}/orders", orders.create_order, "Place an order", 201,
             Order, OrderCreate, headers=("Idempotency-Key",), errors=(404, 422),
             ok_headers=("Location",),
             links=(link("get_order", orders.get_order, order_id="$response.body#/id"),
                    link("get_user", users.get_user, user_id="$response.body#/user_id"),
                    link("list_orders", orders.list_orders, user_id="$response.body#/user_id"))),
    Endpoint("GET", "/users/{user_id}/orders", orders.list_orders,
             "Page through a user's orders, newest first", 200, OrderPage,
             query=("limit", "after"), errors=(404,)),
    Endpoint("GET", "/orders/{order_id}", orders.get_order, "One order", 200, Order,
             headers=("If-None-Match",), errors=(304, 404), ok_headers=("ETag",),
             cached=orders.cached_order,
             links=(link("get_user", users.get_user, user_id="$response.body#/user_id"),)),
    Endpoint("GET", "/health/live", health.live, "Liveness: the process answers", 200, Health,
             policy=PROBE),
    Endpoint("GET", "/health/ready", health.ready,
             "Readiness: the database answers and shutdown has not begun", 200, Health,
             policy=PROBE),
    Endpoint("GET", "/openapi.json", docs.document, "This document", public=False,
             policy=PUBLIC),
    Endpoint("GET", "/docs", docs.page, "Swagger UI for this document", public=False,
             policy=PUBLIC, served_if=_docs_enabled),
    Endpoint("GET", "/docs/{asset}", docs.asset, "Swagger UI's files", public=False,
             policy=PUBLIC, served_if=_docs_enabled),
    Endpoint("GET", "/metrics", metrics_handler, "Prometheus metrics", public=False,
             policy=SCRAPE, served_if=_metrics_on_api_port),
)  # fmt: skip


def setup_routes(app: web.Application) -> None:
    """One resource per path, holding all its methods: a URL is matched once, not per method.

    Every handler runs inside the pipeline (`add_route`), and what the router cannot match
    gets it too (`UnmatchedResource`); a route added around them fails the start-up.
    """
    settings = app[SETTINGS]
    # The router tries the resources under one prefix (/users) in the order they were
    # added: the cached reads, the hottest paths, first.
    for endpoint in sorted(ENDPOINTS, key=lambda endpoint: endpoint.cached is None):
        if endpoint.served_if is not None and not endpoint.served_if(settings):
            continue  # e.g. /metrics on its own port (metrics_server_ctx), /docs turned off
        add_route(
            app,
            endpoint.method,
            endpoint.path,
            endpoint.handler,
            policy=endpoint.policy,
            cached=endpoint.cached,
        )
    policy = UnmatchedPolicy([(endpoint.path, endpoint.policy) for endpoint in ENDPOINTS])
    pipelined = app[PIPELINE].wrap(refuse, hdrs.METH_ANY, UNMATCHED, policy)
    app.router.register_resource(UnmatchedResource(app.router, pipelined))
    app.on_startup.append(_check_routes)


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    *,
    policy: Policy = API,
    cached: Answer | None = None,
) -> None:
    """Serve `handler` for `method` (`*`: any) on `path`, inside the pipeline, under
    `policy` (`cached`: see Endpoint).

    A GET also answers HEAD (RFC 9110 §9.1) with the same handler, so the two cannot
    disagree; aiohttp sends the headers, Content-Length included, and drops the body.
    """
    router = app.router
    known = (r for r in router.resources() if isinstance(r, web.Resource) and r.raw_match(path))
    resource = next(known, None)
    if resource is None:  # one resource per path, holding all its methods
        resource = router.add_resource(path)
    pipeline = app[PIPELINE]
    route = resource.canonical
    methods = (method, hdrs.METH_HEAD) if method == hdrs.METH_GET else (method,)
    for each in methods:
        wrapped = pipeline.wrap(handler, each, route, policy, cached)
        resource.add_route(each, wrapped, expect_handler=expect_continue)


async def _check_routes(app: web.Application) -> None:
    """on_startup: a handler added straight to the router would run without request ids,
    metrics, problem+json or authentication; refuse to start instead."""
    wrapped = app[PIPELINE].wrapped
    for route in app.router.routes():
        if route.handler not in wrapped:
            raise RuntimeError(f"{route.method} {route.resource}: add routes with routes.add_route")
