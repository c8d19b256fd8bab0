"""/users: create, page, read (with order history), change and delete users."""

from __future__ import annotations

from aiohttp import web

from service.domain.schemas import UserCreate, UserPatch
from service.domain.use_cases import USER_USE_CASES
from service.http.handlers.common import (
    conditional_json,
    email_param,
    idempotency_key,
    json_body,
    page_params,
    path_id,
)
from service.http.preconditions import if_match, if_none_match
from service.http.responses import json_response

_FILTERS = frozenset({"email"})


async def create_user(request: web.Request) -> web.Response:
    data = await json_body(request, UserCreate)
    key = idempotency_key(request)
    user = await request.app[USER_USE_CASES].create_user(data, key)
    return json_response(user, status=201, headers={"Location": f"/users/{user['id']}"})


async def list_users(request: web.Request) -> web.Response:
    """A page of users, or with `?email=` the one user with that address (or none)."""
    limit, after = page_params(request, _FILTERS)
    email = email_param(request)
    use_cases = request.app[USER_USE_CASES]
    if email is not None:
        page = await use_cases.find_user_by_email(email)
    else:
        page = await use_cases.list_users(limit, after)
    return json_response({"items": page.items, "next": page.next})


async def get_user(request: web.Request) -> web.Response:
    """The user and their 100 newest orders, fetched concurrently; a memory hit answers
    without suspending."""
    user_id = path_id(request, "user_id")
    use_cases = request.app[USER_USE_CASES]
    found = use_cases.cached_user_with_orders(user_id) or await use_cases.user_with_orders(user_id)
    return conditional_json(request, found)


async def patch_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id")
    patch = await json_body(request, UserPatch)
    updated = await request.app[USER_USE_CASES].update_user(
        user_id, patch, if_match(request), if_none_match(request)
    )
    return json_response(updated.data, headers={"ETag": updated.etag})


async def delete_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id")
    await request.app[USER_USE_CASES].delete_user(
        user_id, if_match(request), if_none_match(request)
    )
    return web.Response(status=204)
