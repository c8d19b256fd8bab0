"""GET /openapi.json: the OpenAPI 3.1 document, built once at start-up from the route table."""

from __future__ import annotations

from aiohttp import web

from service.http.responses import raw_json_response

OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)


async def document(request: web.Request) -> web.Response:
    return raw_json_response(request.app[OPENAPI_DOCUMENT])
