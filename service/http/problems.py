"""Errors as `application/problem+json` (RFC 9457): the service's own (domain/errors.py),
aiohttp's HTTP exceptions, and anything unexpected as a bare 500 whose details go to the
log, never the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from service.domain.errors import ServiceError
from service.http.responses import PROBLEM_JSON, raw_json_response

log = logging.getLogger(__name__)


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
