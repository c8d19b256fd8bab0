"""What the router cannot match (404, 405): answered through the pipeline like any route.

`UnmatchedResource` takes every request no route matched, and `UnmatchedPolicy` says what
the pipeline does around its answer, from the policies of the routes near its path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import MatchInfoError, UrlMappingMatchInfo, _InfoDict
from yarl import URL

from service.http.pipeline import Policy

_DEFAULT = Policy()  # near no route: as strict as the API's own routes


class UnmatchedPolicy:
    """The policy for a request nothing matched: the strictest of the routes near
    its path, where a route's reach is its path up to the last `/` before any variable, or
    the whole path at the top level (`/health/live`: `/health/`; `/metrics`: `/metrics`).

    So a 404 under `/health/` is as open and unbounded as the probes, and one under
    `/users/` needs the token the users' routes need. Routes not served here count too:
    `/metrics` scraped on the API port while it is served on its own port (a misdirected
    scraper) is still neither counted nor logged.
    """

    def __init__(self, routes: Sequence[tuple[str, Policy]]) -> None:
        """`routes`: each route's path (a template) and policy, served here or not."""
        reach: dict[str, list[Policy]] = {}
        for path, policy in routes:
            static = path.partition("{")[0]
            head = static.rpartition("/")[0]
            reach.setdefault(f"{head}/" if head else static, []).append(policy)
        self._reach = tuple((prefix, _strictest(policies)) for prefix, policies in reach.items())
        self._unobserved = frozenset(path for path, policy in routes if not policy.observed)

    def __call__(self, path: str) -> Policy:
        near = [policy for prefix, policy in self._reach if path.startswith(prefix)]
        strictest = _strictest(near) if near else _DEFAULT
        return Policy(strictest.token, strictest.bounded, path not in self._unobserved)


def _strictest(policies: list[Policy]) -> Policy:
    return Policy(
        token=any(p.token for p in policies),
        bounded=any(p.bounded for p in policies),
        observed=any(p.observed for p in policies),
    )


async def refuse(request: web.Request) -> web.StreamResponse:
    """What the router could not match: its 404, or its 405 with Allow."""
    error = request.match_info.http_exception
    assert error is not None  # only UnmatchedResource routes here
    raise error


class _Unmatched(MatchInfoError):
    """The router's 404 or 405, answered by the pipeline instead of bare aiohttp."""

    __slots__ = ("_pipelined",)

    def __init__(self, error: web.HTTPException, pipelined: Handler) -> None:
        super().__init__(error)
        self._pipelined = pipelined

    @property
    def handler(self) -> Handler:
        return self._pipelined


class UnmatchedResource(web.AbstractResource):
    """The router's last candidate for every path: it takes what nothing else matched.

    Indexed under `/`, which the router tries after every longer prefix. It answers with
    the 404 or 405 the router would have made (asking the other resources which methods
    the path allows), through the pipeline, so unknown URLs get problem+json, request ids,
    metrics under `<unmatched>` and the access log like everything else.
    """

    def __init__(self, router: web.UrlDispatcher, pipelined: Handler) -> None:
        super().__init__()
        self._router = router
        self._pipelined = pipelined

    @property
    def canonical(self) -> str:
        return "/"

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is not self:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            error: web.HTTPException = web.HTTPMethodNotAllowed(request.method, allowed)
        else:
            error = web.HTTPNotFound()
        return _Unmatched(error, self._pipelined), allowed

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("the unmatched resource has no URL")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the unmatched resource takes no prefix")

    def get_info(self) -> _InfoDict:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(())
