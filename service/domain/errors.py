"""Errors the service can answer with, and `render_error`, which renders them.

Every error leaves as `application/problem+json` (RFC 9457). Code below the handlers raises
the classes here without knowing about HTTP; the request pipeline maps them to a status and
turns anything unexpected into a bare 500 whose details go to the log, never the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from aiohttp import web

from service.http.responses import PROBLEM_JSON, raw_json_response

log = logging.getLogger(__name__)
# Problems listed in one answer: enough to fix a request in one round trip, while a body
# of thousands of unknown keys cannot buy an answer five times its size.
MAX_LISTED_ERRORS = 20


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
        listed = list(errors or ())
        self.errors = listed[:MAX_LISTED_ERRORS]
        self.errors_omitted = len(listed) - len(self.errors)
        if self.errors_omitted:
            detail = (
                f"{detail} The first {MAX_LISTED_ERRORS} problems are listed; "
                f"{self.errors_omitted} more are not."
            )
        self.detail = detail
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


class RequestTimeout(ServiceError):
    """The body did not arrive in time; the connection is closed, not reused."""

    status = 408

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class PayloadTooLarge(ServiceError):
    status = 413

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


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
    errors_omitted: int = 0,
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
    if errors_omitted:
        body["errors_omitted"] = errors_omitted
    merged = {"Cache-Control": "no-store", **(headers or {})}
    response = raw_json_response(
        orjson.dumps(body), status=status, headers=merged, content_type=PROBLEM_JSON
    )
    if merged.get("Connection") == "close":
        response.force_close()  # aiohttp closes what the header announces, not just says so
    return response


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


def render_error(request: web.Request, error: Exception) -> web.Response:
    """Any exception a handler raised, as problem+json; unexpected ones logged, not shown."""
    if isinstance(error, ServiceError):
        return problem_response(
            error.status,
            error.detail,
            type_=error.slug,
            errors=error.errors,
            errors_omitted=error.errors_omitted,
            headers=error.headers,
        )
    if isinstance(error, web.HTTPException):
        return _from_http_exception(error)
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return problem_response(500, "An unexpected error occurred; it has been logged.")
