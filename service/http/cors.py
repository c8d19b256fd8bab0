"""CORS, the server's side of the Fetch standard: off unless `cors.allow_origins` names origins.

Origins are matched exactly (a browser sends `Origin` serialized, so a set lookup is the
whole check). No `Access-Control-Allow-Credentials`: the API authenticates with a bearer
token the page sets itself, never with cookies. Responses name the origin they allowed,
so every response says `Vary: Origin`, lest a shared cache hand one origin's answer to
another. A preflight the service would refuse (an origin, method or header it does not
allow) gets what any OPTIONS gets, 405 with `Allow` and no `Access-Control-Allow-Methods`,
so the browser never sends the request.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from aiohttp import web

from service.http.responses import add_vary
from service.settings.model import CorsSettings

# Request headers a page may send: the ones the API reads (Accept is safelisted, but only
# for short values; listing it keeps a long one from failing the preflight).
ALLOWED_HEADERS = (
    "Accept",
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
)
# Response headers a page may read beyond the safelisted ones.
EXPOSED_HEADERS = ("ETag", "Location", "Retry-After", "X-Request-ID")
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class Cors:
    def __init__(self, settings: CorsSettings) -> None:
        self.enabled = bool(settings.allow_origins)
        self._origins = frozenset(settings.allow_origins)
        self._max_age = str(settings.max_age_seconds)
        self._allowed_headers = frozenset(name.lower() for name in ALLOWED_HEADERS)
        self._exposed = ", ".join(EXPOSED_HEADERS)

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a preflight the service allows; None for any other OPTIONS."""
        headers = request.headers
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method")
        if origin not in self._origins or method is None:
            return None
        refusal = request.match_info.http_exception
        if not isinstance(refusal, web.HTTPMethodNotAllowed):
            return None  # no such URL: its 404 fails the preflight
        allowed = refusal.allowed_methods
        requested = {
            name.strip().lower()
            for name in headers.get("Access-Control-Request-Headers", "").split(",")
            if name.strip()
        }
        if method not in allowed or not requested <= self._allowed_headers:
            return None
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(sorted(allowed)),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": self._max_age,
                "Vary": _PREFLIGHT_VARY,
            },
        )

    def decorate(self, request: web.BaseRequest, headers: MutableMapping[str, str]) -> None:
        """On every response while CORS is on: Vary, and the allowed origin's headers."""
        if "Access-Control-Allow-Origin" in headers:
            return  # a preflight answer, complete already
        add_vary(headers, "Origin")
        origin = request.headers.get("Origin")
        if origin is not None and origin in self._origins:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = self._exposed
