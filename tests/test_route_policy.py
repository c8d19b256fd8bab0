"""Per-route policy: what a request nothing matched gets, from the routes near its path."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.http.routes import ROUTE_POLICIES
from service.settings.loading import load_settings
from tests.helpers.app import AiohttpClient

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

TOKEN = "policy-writer-token-0123456789"


@pytest.mark.parametrize(
    ("path", "token", "bounded", "observed"),
    [
        ("/health/startup", False, False, True),  # a probe's neighbour: open, never shed
        ("/health", True, True, True),  # not under /health/
        ("/metrics", False, False, False),  # a scrape where /metrics is not served
        ("/metrics/x", False, False, True),
        ("/docs/missing.js", False, True, True),
        ("/openapi.yaml", True, True, True),
        ("/users/a/b/c", True, True, True),
        ("/orders", True, True, True),
        ("/nowhere", True, True, True),
    ],
)
def test_unmatched_paths_take_the_policy_of_the_routes_near_them(
    path: str, token: bool, bounded: bool, observed: bool
) -> None:
    policy = ROUTE_POLICIES.of_unmatched(path)
    assert (policy.token, policy.bounded, policy.observed) == (token, bounded, observed)


async def test_unmatched_answers_follow_the_policy(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    settings = load_settings({**test_env, "API_TOKENS": TOKEN, "AUTH_READS": "true"})
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/health/startup")).status == 404  # no token asked
    assert (await client.post("/metrics")).status == 405
    assert (await client.get("/users/a/b/c")).status == 401
    assert (await client.delete("/health/live")).status == 405
    assert (await client.delete("/users")).status == 401
