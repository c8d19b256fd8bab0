"""The URL table, readable top to bottom: each route's handler, policy and contract. The
OpenAPI document is generated from it, and the request middleware reads the policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
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


@dataclass(frozen=True, slots=True)
class Policy:
    """What the request middleware does around a route besides running it; the OpenAPI
    document reads it too."""

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


# What the middleware does around each route.
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
    hot: bool = False  # added to the router first (see setup_routes)


_USER_FROM_BODY = "$response.body#/id"
_IF_MATCH_FROM_ETAG = {"header.If-Match": "$response.header.ETag"}
ENDPOINTS = (
    Endpoint("POST", "/users", users.create_user, "Create a user", 201, User, UserCreate,
             headers=("Idempotency-Key",), errors=(409, 422), ok_headers=("Location",),
             links=(link("get_user", users.get_user, user_id=_USER_FROM_BODY),
                    link("patch_user", users.patch_user, user_id=_USER_FROM_BODY),
                    link("delete_user", users.delete_user, user_id=_USER_FROM_BODY),
                    link("create_order", orders.create_order, user_id=_USER_FROM_BODY),
                    link("list_orders", orders.list_orders, user_id=_USER_FROM_BODY),
                    link("find_user_by_email", users.list_users,
                         **{"query.email": "$response.body#/email"}))),
    Endpoint("GET", "/users", users.list_users,
             "Page through users, or look one up by email", 200, UserPage,
             query=("limit", "after", "email")),
    Endpoint("GET", "/users/{user_id}", users.get_user, "A user and their 100 newest orders",
             200, UserWithOrders, headers=("If-None-Match",), errors=(304, 404),
             ok_headers=("ETag",), hot=True,
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
             hot=True,
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
    """Register the served endpoints; a GET answers HEAD too (RFC 9110 §9.1), with the same
    handler, so the two cannot disagree (aiohttp drops the body and keeps Content-Length).

    The cached reads are added first: the router tries the resources under one prefix
    (/users) in the order they were added, and those are the hottest paths.
    """
    settings = app[SETTINGS]
    served = [
        endpoint
        for endpoint in ENDPOINTS
        if endpoint.served_if is None or endpoint.served_if(settings)
    ]
    # One resource per path, holding all its methods (a URL is matched once, not per
    # method): aiohttp adds a route to the last resource when the path is the same.
    paths = sorted(
        dict.fromkeys(e.path for e in served), key=lambda path: not _is_hot(served, path)
    )
    app.router.add_routes(
        [
            web.route(e.method, e.path, e.handler, expect_handler=expect_continue)
            for path in paths
            for e in served
            if e.path == path
        ]
    )


def _is_hot(endpoints: Sequence[Endpoint], path: str) -> bool:
    return any(endpoint.hot for endpoint in endpoints if endpoint.path == path)


class RoutePolicies:
    """The policy of the route a request matched, from the table; the strictest of the routes
    near its path for what the router could not match (404, 405).

    A route's reach is its path up to the last `/` before any variable, or the whole path at
    the top level (`/health/live`: `/health/`; `/metrics`: `/metrics`). So a 404 under
    `/health/` is as open and unbounded as the probes, and one under `/users/` needs the
    token the users' routes need. Routes not served here count too: `/metrics` scraped on
    the API port while it is served on its own port is still neither counted nor logged. A
    route added with a plain `router.add_get` gets the API's defaults.
    """

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._by_handler = {endpoint.handler: endpoint.policy for endpoint in endpoints}
        reach: dict[str, list[Policy]] = {}
        for endpoint in endpoints:
            static = endpoint.path.partition("{")[0]
            head = static.rpartition("/")[0]
            reach.setdefault(f"{head}/" if head else static, []).append(endpoint.policy)
        self._reach = tuple((prefix, _strictest(policies)) for prefix, policies in reach.items())
        self._unobserved = frozenset(e.path for e in endpoints if not e.policy.observed)

    def of_handler(self, handler: Handler) -> Policy:
        return self._by_handler.get(handler, API)

    def of_unmatched(self, path: str) -> Policy:
        near = [policy for prefix, policy in self._reach if path.startswith(prefix)]
        strictest = _strictest(near) if near else API
        return Policy(strictest.token, strictest.bounded, path not in self._unobserved)


def _strictest(policies: list[Policy]) -> Policy:
    return Policy(
        token=any(p.token for p in policies),
        bounded=any(p.bounded for p in policies),
        observed=any(p.observed for p in policies),
    )


ROUTE_POLICIES = RoutePolicies(ENDPOINTS)
