"""Orders: create for a user, page a user's history, read one."""

from __future__ import annotations

from aiohttp import web

from service.domain.schemas import OrderCreate
from service.domain.use_cases import ORDER_USE_CASES
from service.http.handlers.common import (
    conditional_json,
    idempotency_key,
    json_body,
    page_params,
    path_id,
)
from service.http.responses import json_response


async def create_order(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id")
    data = await json_body(request, OrderCreate)
    key = idempotency_key(request)
    order = await request.app[ORDER_USE_CASES].create_order(user_id, data, key)
    return json_response(order, status=201, headers={"Location": f"/orders/{order['id']}"})


async def list_orders(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id")
    limit, after = page_params(request)
    page = await request.app[ORDER_USE_CASES].list_orders(user_id, limit, after)
    return json_response({"items": page.items, "next": page.next})


async def get_order(request: web.Request) -> web.Response:
    order_id = path_id(request, "order_id")
    use_cases = request.app[ORDER_USE_CASES]
    found = use_cases.cached_order(order_id) or await use_cases.order(order_id)
    return conditional_json(request, found)
