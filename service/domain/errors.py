"""Errors with a meaning clients can act on, raised anywhere below the handlers.

Code here knows no HTTP beyond the status each class maps to; service/http/problems.py
renders them as `application/problem+json` (RFC 9457).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

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
