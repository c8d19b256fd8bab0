"""Write authentication, request-size limits, load shedding and response hardening."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace

import pytest
from aiohttp import web

from service.app import create_app
from service.http.middlewares import REQUEST_CONTEXT
from service.settings.loading import load_settings
from service.settings.model import Settings
from tests.helpers.app import AiohttpClient, Client, wait_until

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

WRITER = "writer-token-0123456789"
READER = "reader-token-0123456789"
HASHED = "hashed-token-0123456789"
RELEASE = web.AppKey("release", asyncio.Event)


async def _echo(request: web.Request) -> web.Response:
    """A test-only route standing for any handler behind the middleware."""
    return web.json_response({"method": request.method})


async def _slow(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.json_response({"ok": True})


def _app(test_env: dict[str, str], **env: str) -> tuple[web.Application, Settings]:
    settings = load_settings({**test_env, **env})
    app = create_app(settings)
    app.router.add_route("*", "/things", _echo)  # a plain route: the defaults
    return app, settings


@pytest.fixture
def secured(test_env: dict[str, str]) -> Callable[..., web.Application]:
    def make(**env: str) -> web.Application:
        return _app(test_env, API_TOKENS=f"{WRITER},{READER}:read", **env)[0]

    return make


async def test_writes_need_a_valid_bearer_token(
    aiohttp_client: AiohttpClient, secured: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(secured())
    missing = await client.post("/things")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    assert missing.content_type == "application/problem+json"
    wrong = await client.post("/things", headers={"Authorization": "Bearer not-a-real-token-xx"})
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = await client.post("/things", headers={"Authorization": f"Basic {WRITER}"})
    assert basic.status == 401
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        ok = await client.request(method, "/things", headers={"Authorization": f"Bearer {WRITER}"})
        assert ok.status == 200, method


async def test_read_scope_cannot_write_and_reads_stay_open(
    aiohttp_client: AiohttpClient, secured: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(secured())
    forbidden = await client.post("/things", headers={"Authorization": f"Bearer {READER}"})
    assert forbidden.status == 403
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    assert (await client.get("/things")).status == 200
    assert (await client.get("/health/ready")).status in (200, 503)


async def test_reads_can_be_protected_too(
    aiohttp_client: AiohttpClient, secured: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(secured(AUTH_READS="true"))
    assert (await client.get("/things")).status == 401
    assert (
        await client.get("/things", headers={"Authorization": f"Bearer {READER}"})
    ).status == 200
    assert (await client.get("/health/live")).status == 200  # probes never need a token


async def test_sha256_digests_from_config_work(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    settings = load_settings(test_env)
    digest = hashlib.sha256(HASHED.encode()).hexdigest()
    settings = replace(settings, auth=replace(settings.auth, token_sha256=(digest,)))
    app = create_app(settings)
    app.router.add_route("*", "/things", _echo)  # a plain route: the defaults
    client = await aiohttp_client(app)
    assert (await client.post("/things")).status == 401
    assert (
        await client.post("/things", headers={"Authorization": f"Bearer {HASHED}"})
    ).status == 200


async def test_tokens_never_reach_the_logs(
    aiohttp_client: AiohttpClient,
    secured: Callable[..., web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await aiohttp_client(secured())
    with caplog.at_level(logging.DEBUG):
        await client.post("/things", headers={"Authorization": f"Bearer {WRITER}"})
        await client.post("/things", headers={"Authorization": "Bearer guessed-token-9999999"})
    text = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert WRITER not in text
    assert "guessed-token-9999999" not in text


async def test_no_tokens_means_open_writes(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    client = await aiohttp_client(_app(test_env)[0])
    assert (await client.post("/things")).status == 200


async def test_every_response_says_nosniff_and_errors_say_no_store(client: Client) -> None:
    ok = await client.get("/health/live")
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    missing = await client.get("/nowhere")
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
    assert missing.headers["Cache-Control"] == "no-store"


async def test_oversize_headers_get_431_and_long_urls_414(client: Client) -> None:
    big = await client.get("/health/live", headers={f"X-Pad-{i}": "v" * 500 for i in range(20)})
    assert big.status == 431
    assert big.content_type == "application/problem+json"
    long_url = await client.get("/users/" + "a" * 5000)
    assert long_url.status == 414
    assert long_url.content_type == "application/problem+json"


async def test_pathological_heads_are_refused_by_the_parser(client: Client) -> None:
    """Beyond aiohttp's own (explicit) limits the parser refuses before any handler runs."""
    huge = await client.get("/health/live", headers={"X-Huge": "v" * 40_000})
    assert 400 <= huge.status < 500


async def test_overload_is_shed_with_fast_503s_and_recovers(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    app, _ = _app(test_env, MAX_IN_FLIGHT="2")
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/slow", _slow)
    client = await aiohttp_client(app)
    held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]

    async def both_in_flight() -> bool:
        return app[REQUEST_CONTEXT].in_flight.current == 2

    await wait_until(both_in_flight)
    shed = await client.get("/slow")
    assert shed.status == 503
    assert shed.headers["Retry-After"] == "1"
    assert (await client.get("/health/live")).status == 200  # probes are never shed
    app[RELEASE].set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    assert (await client.get("/slow")).status == 200
