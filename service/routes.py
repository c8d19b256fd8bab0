"""The URL table, readable top to bottom. The OpenAPI document is generated from it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from msgspec import Struct

from service.config import SETTINGS
from service.handlers import health, openapi, orders, users
from service.metrics import metrics_handler
from service.schemas import (
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
    public: bool = True  # False: served, but not part of the documented API


ENDPOINTS = (
    Endpoint("POST", "/users", users.create_user, "Create a user", 201, User, UserCreate,
             headers=("Idempotency-Key",), errors=(409, 422)),
    Endpoint("GET", "/users", users.list_users, "Page through users", 200, UserPage,
             query=("limit", "after")),
    Endpoint("GET", "/users/{user_id}", users.get_user, "A user and their 100 newest orders",
             200, UserWithOrders, headers=("If-None-Match",), errors=(304, 404)),
    Endpoint("PATCH", "/users/{user_id}", users.patch_user, "Change a user's name or email",
             200, User, UserPatch, headers=("If-Match",), errors=(404, 409, 412)),
    Endpoint("DELETE", "/users/{user_id}", users.delete_user, "Delete a user and their orders",
             204, headers=("If-Match",), errors=(404, 412)),
    Endpoint("POST", "/users/{user_id}/orders", orders.create_order, "Place an order", 201,
             Order, OrderCreate, headers=("Idempotency-Key",), errors=(404, 422)),
    Endpoint("GET", "/users/{user_id}/orders", orders.list_orders,
             "Page through a user's orders, newest first", 200, OrderPage,
             query=("limit", "after"), errors=(404,)),
    Endpoint("GET", "/orders/{order_id}", orders.get_order, "One order", 200, Order,
             headers=("If-None-Match",), errors=(304, 404)),
    Endpoint("GET", "/health/live", health.live, "Liveness: the process answers", 200, Health),
    Endpoint("GET", "/health/ready", health.ready,
             "Readiness: the database answers and shutdown has not begun", 200, Health),
    Endpoint("GET", "/openapi.json", openapi.document, "This document", public=False),
    Endpoint("GET", "/metrics", metrics_handler, "Prometheus metrics", public=False),
)  # fmt: skip


def setup_routes(app: web.Application) -> None:
    """One resource per path, holding all its methods: a URL is matched once, not per method."""
    resources: dict[str, web.Resource] = {}
    separate_metrics = app[SETTINGS].metrics.port != 0
    for endpoint in ENDPOINTS:
        if separate_metrics and endpoint.handler is metrics_handler:
            continue  # served on its own port (metrics_server_ctx)
        resource = resources.get(endpoint.path)
        if resource is None:
            resource = resources[endpoint.path] = app.router.add_resource(endpoint.path)
        resource.add_route(endpoint.method, endpoint.handler)
