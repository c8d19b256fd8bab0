"""/users: the user aggregate and (with the REST API) the user resource."""

from __future__ import annotations

from aiohttp import web

from service.handlers.common import path_id
from service.repository import REPOSITORY
from service.responses import json_response


async def get_user(request: web.Request) -> web.Response:
    """The user and their 100 newest orders, fetched concurrently."""
    user_id = path_id(request, "user_id")
    aggregate = await request.app[REPOSITORY].get_user_with_orders(user_id)
    return json_response(aggregate)
