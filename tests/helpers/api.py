"""Helpers for API tests: check every response against the published OpenAPI document."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
from aiohttp import ClientResponse

from service.http.openapi import build_document
from service.http.routes import ENDPOINTS
from service.settings.loading import load_settings

# The document of the test configuration (no tokens, so no 401/403): what the app serves.
DOCUMENT = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test"}))
_COMPONENTS = DOCUMENT["components"]["schemas"]


def response_schema(method: str, template: str, status: int) -> dict[str, Any] | None:
    """The schema the document promises for this response, or fail if it promises none."""
    operation = DOCUMENT["paths"][template][method.lower()]
    spec = operation["responses"].get(str(status))
    assert spec is not None, f"{method} {template} answered {status}, which the spec omits"
    content = spec.get("content")
    if not content:
        return None
    ((media, body),) = content.items()
    return {"media": media, "schema": body["schema"]}


async def checked(response: ClientResponse, method: str, template: str) -> Any:
    """The response's JSON body, after checking status, media type and body against the spec."""
    promised = response_schema(method, template, response.status)
    body = await response.read()
    if promised is None:
        assert body == b"", f"{response.status} should have no body"
        return None
    assert response.content_type == promised["media"]
    data = orjson.loads(body)
    schema = {**promised["schema"], "components": {"schemas": _COMPONENTS}}
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    return data
