"""The API's contract in tests: every response checked against the published OpenAPI
document, and the few builders that make data through the API itself."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
from aiohttp import ClientResponse

from service.http.openapi import build_document
from service.http.routes import ENDPOINTS
from service.settings.loading import load_settings
from tests.helpers.app import Client

# The document of the test configuration (no tokens, so no 401/403): what the app serves.
DOCUMENT = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test"}))
_COMPONENTS = DOCUMENT["components"]["schemas"]
JSON = {"Content-Type": "application/json"}
PROBLEM = "application/problem+json"


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


async def create_user(
    client: Client, name: str = "Ada Lovelace", email: str = "ada@example.com"
) -> Any:
    """POST /users: the created user, checked against the document."""
    response = await client.post("/users", json={"name": name, "email": email})
    assert response.status == 201, await response.text()
    return await checked(response, "POST", "/users")


async def place_order(client: Client, user_id: str, body: dict[str, Any] | None = None) -> Any:
    """POST /users/{id}/orders (an amount of 1999 unless `body` says otherwise), checked."""
    response = await client.post(f"/users/{user_id}/orders", json=body or {"amount": 1999})
    assert response.status == 201, await response.text()
    return await checked(response, "POST", "/users/{user_id}/orders")
