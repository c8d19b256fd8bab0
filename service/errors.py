"""Errors the service can answer with, and the one middleware that renders them.

Every error leaves as `application/problem+json` (RFC 9457). Code below the handlers raises
the classes here without knowing about HTTP; the middleware maps them to a status and
turns anything unexpected into a bare 500 whose details go to the log, never the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from service.logs import request_id_var
from service.responses import PROBLEM_JSON, raw_json_response

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID = web.RequestKey("request_id", str)


class ServiceError(Exception):
    """An error with a meaning clients can act on; `status` says which HTTP answer fits."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors or ())
        self.headers = dict(headers or {})


class InvalidInput(ServiceError):
    status = 400
    slug = "/problems/invalid-input"


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409
    slug = "/problems/conflict"


class PreconditionFailed(ServiceError):
    status = 412


class UnsupportedMediaType(ServiceError):
    status = 415


class UriTooLong(ServiceError):
    status = 414


class HeadersTooLarge(ServiceError):
    status = 431


class Unprocessable(ServiceError):
    status = 422
    slug = "/problems/idempotency-key-reused"


class Unavailable(ServiceError):
    """A dependency cannot answer in time; clients should retry after `retry_after` seconds."""

    status = 503
    slug = "/problems/unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def problem_response(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    errors: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": type_,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = list(errors)
    merged = {"Cache-Control": "no-store", **(headers or {})}
    return raw_json_response(
        orjson.dumps(body), status=status, headers=merged, content_type=PROBLEM_JSON
    )


_HTTP_DETAILS = {
    404: "No resource at this URL.",
    405: "This method is not allowed on this URL.",
    413: "The request body is too large.",
}
_PASSED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {name: exc.headers[name] for name in _PASSED_HEADERS if name in exc.headers}
    detail = _HTTP_DETAILS.get(exc.status, exc.reason)
    return problem_response(exc.status, detail, headers=headers)


def request_id_of(request: web.Request) -> str:
    return str(request.get(REQUEST_ID, "-"))


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag the request, its log lines and its response with one id (reusing a sane incoming one)."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    finally:
        request_id_var.reset(token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as problem+json; log the unexpected ones with their request id."""
    try:
        return await handler(request)
    except ServiceError as exc:
        return problem_response(
            exc.status, exc.detail, type_=exc.slug, errors=exc.errors, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "An unexpected error occurred; it has been logged.")
