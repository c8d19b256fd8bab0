"""Request parsing shared by the resource handlers."""

from __future__ import annotations

from aiohttp import web

from service.errors import NotFound
from service.ids import is_valid_path_id


def path_id(request: web.Request, name: str) -> str:
    """The id in the URL, or a 404 before any query when it cannot be one of ours."""
    value = request.match_info[name]
    if not is_valid_path_id(value):
        raise NotFound(f"No resource with this {name}.")
    return value
