"""Build the OpenAPI 3.1 document from the route table, the msgspec schemas and the settings.

Because routes and schemas are the same objects that serve and validate requests, the
document cannot drift from the code; a test still checks both directions. It describes the
service as configured: which operations need a bearer token (and so may answer 401/403)
comes from the route's policy and the same TokenVerifier that enforces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec

from service.domain.schemas import (
    NON_EMPTY,
    After,
    Email,
    IdempotencyKey,
    OrderId,
    PageLimit,
    Problem,
    UserId,
)
from service.http.auth import WRITE, TokenVerifier
from service.http.limits import MAX_BODY_BYTES
from service.http.preconditions import ENTITY_TAGS_PATTERN
from service.settings.model import Settings

if TYPE_CHECKING:
    from service.http.routes import Endpoint

REF = "#/components/schemas/{name}"
HEADER_REF = "#/components/headers/{name}"
PROBLEM_JSON = "application/problem+json"
# Errors any operation can answer: bad input, sizes, shedding/outages, and the bare 500.
_COMMON_ERRORS = (400, 413, 414, 431, 500, 503)
_BODY_ERRORS = (415,)
# What each error means here, so a client (and its generated docs) can tell them apart.
_MEANINGS = {
    304: "Not Modified: the ETag in If-None-Match is still current; no body",
    400: "Invalid input (every offending field named in `errors`), or an `after` cursor "
    "this service did not issue",
    401: "A bearer token is needed (`WWW-Authenticate` says why)",
    403: "The bearer token lacks the scope (a `:read` token on a write)",
    404: "No such resource",
    409: "Conflict: the email is taken, or a request with this Idempotency-Key is running",
    412: "Precondition Failed: If-Match names no current ETag (someone else changed it); "
    "nothing changed",
    413: f"The body is over {MAX_BODY_BYTES // 1024} KiB",
    414: "The request line is too long",
    415: "The body is not sent as application/json",
    422: "This Idempotency-Key was used with another request",
    431: "The header block is too large",
    500: "Unexpected failure; details are logged under the X-Request-ID",
    503: "Overloaded, a dependency is down, or the deadline passed: retry after Retry-After",
}
# One realistic example per answer: generated docs otherwise invent one from the pattern.
_EXAMPLE_DETAILS = {
    304: "",
    400: "The request body is invalid.",
    401: "This request needs an `Authorization: Bearer <token>` header.",
    403: "The bearer token lacks the 'write' scope.",
    404: "No resource with this id.",
    409: "The email is already taken.",
    412: "The user has changed since the ETag in If-Match was issued.",
    413: "The request body is too large.",
    414: "The request line is too long.",
    415: "Send the body as `Content-Type: application/json`.",
    422: "This Idempotency-Key was used with a different request.",
    431: "The request headers are too large.",
    500: "An unexpected error occurred; it has been logged.",
    503: "The database did not answer in time; retry shortly.",
}
_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "strong entity tag of this representation: send it back in "
        "If-None-Match (reads) or If-Match (writes)",
        "schema": {"type": "string", "examples": ['"u1-3"']},
    },
    "Location": {
        "description": "the URL of the created resource",
        "schema": {"type": "string", "format": "uri-reference",
                   "examples": ["/users/01ke6qvwe0mthc792r014fr2"]},
    },
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0, "examples": [1]},
    },
    "X-Request-ID": {
        "description": "the id this request is logged under (a valid incoming one is reused)",
        "schema": {"type": "string", "examples": ["5f0c7b7e9a3d4e21b8c6a1f2d3e4b5c6"]},
    },
    "WWW-Authenticate": {
        "description": "the bearer challenge, with the error when a token was sent",
        "schema": {"type": "string", "examples": ['Bearer realm="user-service"']},
    },
}  # fmt: skip
_PARAMETERS: dict[str, dict[str, Any]] = {
    "limit": {
        "name": "limit", "in": "query", "required": False,
        "schema": msgspec.json.schema(PageLimit),
        "description": "page size",
    },
    "after": {
        "name": "after", "in": "query", "required": False,
        # Opaque: its `format` (per list, see _parameters) says only a `next` value is one,
        # which no pattern could say (it is signed).
        "schema": msgspec.json.schema(After),
        "description": "the `next` cursor of the previous page (opaque; made-up ones get 400)",
    },
    "email": {
        "name": "email", "in": "query", "required": False,
        "schema": msgspec.json.schema(Email),
        "description": "look up the one user with this address (case-insensitive): a page of "
        "one user or none; not with `after`",
    },
    "Idempotency-Key": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": msgspec.json.schema(IdempotencyKey),
        "description": "repeat a request safely: the original response is returned",
    },
    "If-Match": {
        "name": "If-Match", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN, "examples": ['"u1-3"']},
        "description": "ETags of GET /users/{user_id}; on a mismatch nothing changes (412)",
    },
    "If-None-Match": {
        "name": "If-None-Match", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN, "examples": ['"u1-3"']},
        "description": "ETags the client holds (or *): on GET a match answers 304 with no "
        "body; on a write it answers 412 and nothing changes",
    },
}  # fmt: skip
_PATH_IDS = {"user_id": UserId, "order_id": OrderId}
# A cursor is valid only where it was issued: a users cursor is a 400 on orders.
_CURSOR_FORMATS = {"UserPage": "user-cursor", "OrderPage": "order-cursor"}


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters = _path_parameters(endpoint.path)
    for name in (*endpoint.query, *endpoint.headers):
        parameter = _PARAMETERS[name]
        if name == "after" and endpoint.response is not None:
            cursor = _CURSOR_FORMATS[endpoint.response.__name__]
            parameter = {**parameter, "schema": {**parameter["schema"], "format": cursor}}
        parameters.append(parameter)
    return parameters


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": msgspec.json.schema(_PATH_IDS[name]),
        }
        for name in names
    ]


def _headers(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"$ref": HEADER_REF.format(name=name)} for name in names}


def operation_id(endpoint: Endpoint) -> str:
    return endpoint.handler.__name__


def _tag(endpoint: Endpoint) -> str:
    return endpoint.handler.__module__.rsplit(".", 1)[-1]


def _links(endpoint: Endpoint, served: set[str]) -> dict[str, Any]:
    return {
        link.name: {"operationId": link.target.__name__, "parameters": dict(link.parameters)}
        for link in endpoint.links
        if link.target.__name__ in served
    }


def _error(code: int) -> dict[str, Any]:
    if code == 304:
        return {"description": _MEANINGS[304], "headers": _headers("ETag", "X-Request-ID")}
    example = {
        "type": "about:blank",
        "title": HTTPStatus(code).phrase,
        "status": code,
        "detail": _EXAMPLE_DETAILS[code],
    }
    headers = ["X-Request-ID"]
    if code == 503:
        headers.append("Retry-After")
    if code in (401, 403):
        headers.append("WWW-Authenticate")
    return {
        "description": _MEANINGS[code],
        "headers": _headers(*headers),
        "content": {PROBLEM_JSON: {"schema": _ref(Problem), "example": example}},
    }


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _operation(endpoint: Endpoint, verifier: TokenVerifier, served: set[str]) -> dict[str, Any]:
    needed = verifier.required_scope(endpoint.method) if endpoint.policy.token else None
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {
        "description": HTTPStatus(endpoint.ok).phrase,
        "headers": _headers(*endpoint.ok_headers, "X-Request-ID"),
    }
    if endpoint.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    links = _links(endpoint, served)
    if links:
        ok["links"] = links
    responses[str(endpoint.ok)] = ok
    codes = set(_COMMON_ERRORS) | set(endpoint.errors)
    if endpoint.body is not None:
        codes |= set(_BODY_ERRORS)
    if needed is not None:
        # Every token may read, so only a write can be refused for its scope.
        codes |= {401, 403} if needed == WRITE else {401}
    for code in sorted(codes):
        responses[str(code)] = _error(code)
    operation: dict[str, Any] = {
        "operationId": operation_id(endpoint),
        "tags": [_tag(endpoint)],
        "summary": endpoint.summary,
        "parameters": _parameters(endpoint),
        "responses": responses,
    }
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    # Operations without a token requirement leave `security` out: none is needed.
    if needed is not None:
        operation["security"] = [{"bearer": []}]
    return operation


def _published(schema: Any) -> Any:
    """A copy in which a pattern's final `\\Z` (Python: the very end) is `$`, which is
    the very end in JSON Schema (schemas.py says why the service's patterns use `\\Z`)."""
    if isinstance(schema, dict):
        return {
            key: value.removesuffix("\\Z") + "$"
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z")
            else _published(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_published(item) for item in schema]
    return schema


def build_document(endpoints: Iterable[Endpoint], settings: Settings) -> dict[str, Any]:
    """The document for the service as `settings` configure it (tokens, reads, docs)."""
    documented = [endpoint for endpoint in endpoints if endpoint.public]
    verifier = TokenVerifier(settings.auth)
    kinds: set[type[msgspec.Struct]] = {Problem}
    for endpoint in documented:
        kinds.update(kind for kind in (endpoint.body, endpoint.response) if kind is not None)
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda kind: kind.__name__), ref_template=REF
    )
    for kind in NON_EMPTY & kinds:
        components[kind.__name__]["minProperties"] = 1
    served = {operation_id(endpoint) for endpoint in documented}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in documented:
        operation = _operation(endpoint, verifier, served)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "user-service",
            "version": "1.0.0",
            "description": "Users and their orders. Every error is application/problem+json "
            "(RFC 9457); every response carries X-Request-ID.",
        },
        "tags": [
            {"name": "users", "description": "Users: create, page, read with orders, change"},
            {"name": "orders", "description": "A user's orders"},
            {"name": "health", "description": "Probes for the orchestrator"},
        ],
        "paths": paths,
        "components": {"schemas": components, "headers": _HEADERS},
    }
    if verifier.enabled:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token from API_TOKENS; one ending in `:read` may only read"
                + ("" if verifier.protect_reads else " (reads need no token here)"),
            }
        }
    published: dict[str, Any] = _published(document)
    return published
