"""Build the OpenAPI 3.1 document from the route table and the msgspec schemas.

Because routes and schemas are the same objects that serve and validate requests, the
document cannot drift from the code; a test still checks both directions.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec

from service.preconditions import ENTITY_TAGS_PATTERN
from service.schemas import NON_EMPTY, Problem

if TYPE_CHECKING:
    from service.routes import Endpoint

REF = "#/components/schemas/{name}"
PROBLEM_JSON = "application/problem+json"
# Errors any operation can answer: bad input, auth, sizes, shedding/outages, and the bare 500.
_COMMON_ERRORS = (400, 413, 414, 431, 500, 503)
_WRITE_ERRORS = (401, 403, 415)
_PARAMETERS: dict[str, dict[str, Any]] = {
    "limit": {
        "name": "limit", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        "description": "page size",
    },
    "after": {
        "name": "after", "in": "query", "required": False,
        # base64url(position) "." base64url(12-byte MAC), as service/cursors.py makes it
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]{16}$"},
        "description": "the `next` cursor of the previous page",
    },
    "Idempotency-Key": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
        "description": "repeat a request safely: the original response is returned",
    },
    "If-Match": {
        "name": "If-Match", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN},
        "description": "ETags of GET /users/{user_id}; on a mismatch nothing changes (412)",
    },
    "If-None-Match": {
        "name": "If-None-Match", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN},
        "description": "ETags the client holds (or *): on GET a match answers 304 with no "
        "body; on a write it answers 412 and nothing changes",
    },
}  # fmt: skip
_PATH_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": name, "in": "path", "required": True, "schema": _PATH_ID_SCHEMA} for name in names
    ]


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    is_write = endpoint.method in ("POST", "PATCH", "DELETE")
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": HTTPStatus(endpoint.ok).phrase}
    if endpoint.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    if endpoint.ok == 201:
        ok["headers"] = {"Location": {"schema": {"type": "string"}}}
    responses[str(endpoint.ok)] = ok
    codes = set(_COMMON_ERRORS) | set(endpoint.errors) | (set(_WRITE_ERRORS) if is_write else set())
    for code in sorted(codes):
        if code == 304:
            responses["304"] = {"description": "Not Modified: the ETag still matches"}
            continue
        responses[str(code)] = {
            "description": HTTPStatus(code).phrase,
            "content": {PROBLEM_JSON: {"schema": _ref(Problem)}},
        }
    module = endpoint.handler.__module__.rsplit(".", 1)[-1]
    operation: dict[str, Any] = {
        "operationId": f"{module}.{endpoint.handler.__name__}",
        "summary": endpoint.summary,
        "parameters": _path_parameters(endpoint.path)
        + [_PARAMETERS[name] for name in (*endpoint.query, *endpoint.headers)],
        "responses": responses,
    }
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    if is_write:
        operation["security"] = [{"bearer": []}, {}]
    return operation


def _publish_patterns(schema: Any) -> None:
    """In place: a pattern's final `\\Z` (Python: the very end) is `$` in JSON Schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z"):
                schema[key] = value.removesuffix("\\Z") + "$"
            else:
                _publish_patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            _publish_patterns(item)


def build_document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    documented = [endpoint for endpoint in endpoints if endpoint.public]
    kinds: set[type[msgspec.Struct]] = {Problem}
    for endpoint in documented:
        kinds.update(kind for kind in (endpoint.body, endpoint.response) if kind is not None)
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda kind: kind.__name__), ref_template=REF
    )
    for kind in NON_EMPTY & kinds:
        components[kind.__name__]["minProperties"] = 1
    _publish_patterns(components)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in documented:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "user-service",
            "version": "1.0.0",
            "description": "Users and their orders. Every error is application/problem+json.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
