"""CORS per the Fetch standard, off by default, read off the wire and with curl.

With `cors.allow_origins` set, a preflight (OPTIONS with Origin and
Access-Control-Request-Method) from a listed origin is answered 204 with the allowed
methods and headers, before authentication; actual responses to a listed origin name it
and expose ETag, Location and X-Request-ID; every response says `Vary: Origin`. Anything
else, and every OPTIONS while CORS is off, gets the 405 with Allow it always got.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from service.app import create_app
from service.settings.loading import load_settings
from service.settings.model import ConfigError
from tests.helpers.app import AiohttpClient, Client, client_port, ready_client
from tests.helpers.http import curl, exchange

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
WRITER = "writer-token-0123456789"


def _preflight(method: str, headers: str = "", origin: str = APP) -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return sent


async def _cors_client(aiohttp_client: AiohttpClient, env: dict[str, str]) -> Client:
    env = {
        **env,
        "CORS_ALLOW_ORIGINS": f"{APP}, http://localhost:3000",
        "CORS_MAX_AGE_SECONDS": "300",
        "API_TOKENS": WRITER,
    }
    app: web.Application = create_app(load_settings(env))
    return await ready_client(aiohttp_client, app)


@pytest.fixture
async def cors_client(aiohttp_client: AiohttpClient, test_env: dict[str, str]) -> Client:
    return await _cors_client(aiohttp_client, test_env)


async def test_cors_is_off_by_default(client: Client) -> None:
    port = client_port(client)
    preflight = await exchange(port, "OPTIONS", "/users", _preflight("POST"))
    assert preflight.status == 405
    assert set(preflight.tokens("Allow")) == {"GET", "HEAD", "POST"}
    assert not [name for name in preflight.headers if name.lower().startswith("access-control")]
    actual = await exchange(port, "GET", "/health/live", {"Origin": APP})
    assert actual.status == 200
    assert "Access-Control-Allow-Origin" not in actual.headers
    assert "Vary" not in actual.headers


async def test_preflight_from_an_allowed_origin(cors_client: Client) -> None:
    port = client_port(cors_client)
    asked = _preflight("PATCH", "authorization, content-type, if-match")
    response = await exchange(port, "OPTIONS", "/users/u1", asked)
    assert response.status == 204  # no Authorization: a preflight never carries one
    assert response.body == b""
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert set(response.tokens("Access-Control-Allow-Methods")) == {
        "GET", "HEAD", "PATCH", "DELETE",
    }  # fmt: skip
    allowed = {name.lower() for name in response.tokens("Access-Control-Allow-Headers")}
    assert {"authorization", "content-type", "if-match", "if-none-match"} <= allowed
    assert {"idempotency-key", "x-request-id"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "300"
    assert "Origin" in response.tokens("Vary")
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["X-Request-ID"]
    second = await exchange(
        port, "OPTIONS", "/users", _preflight("POST", "Idempotency-Key", "http://localhost:3000")
    )
    assert second.status == 204
    assert second.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


@pytest.mark.parametrize(
    ("path", "asked"),
    [
        ("/users", _preflight("POST", origin=OTHER)),  # origin not listed
        ("/users", _preflight("POST", origin=APP + "/")),  # not the exact origin
        ("/users", _preflight("PUT")),  # a method the URL does not allow
        ("/users", _preflight("POST", "x-secret")),  # a header the API does not take
        ("/users", {"Origin": APP}),  # OPTIONS, but not a preflight
    ],
)
async def test_refused_preflights_get_405_without_permission(
    cors_client: Client, path: str, asked: dict[str, str]
) -> None:
    response = await exchange(client_port(cors_client), "OPTIONS", path, asked)
    assert response.status == 405
    assert set(response.tokens("Allow")) == {"GET", "HEAD", "POST"}
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers.get("Access-Control-Allow-Origin") in (None, APP)
    assert "Access-Control-Allow-Methods" not in response.headers
    assert "Origin" in response.tokens("Vary")


async def test_a_preflight_for_no_such_url_is_404(cors_client: Client) -> None:
    response = await exchange(client_port(cors_client), "OPTIONS", "/nowhere", _preflight("GET"))
    assert response.status == 404
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_actual_responses_name_the_origin_and_expose_headers(cors_client: Client) -> None:
    port = client_port(cors_client)
    body = b'{"name": "Ada", "email": "ada@example.com"}'
    headers = {
        "Origin": APP,
        "Authorization": f"Bearer {WRITER}",
        "Content-Type": "application/json",
    }
    created = await exchange(port, "POST", "/users", headers, body)
    assert created.status == 201
    assert created.headers["Access-Control-Allow-Origin"] == APP
    exposed = {name.lower() for name in created.tokens("Access-Control-Expose-Headers")}
    assert {"etag", "location", "x-request-id"} <= exposed
    assert "Origin" in created.tokens("Vary")
    stranger = await exchange(port, "GET", "/health/live", {"Origin": OTHER})
    assert stranger.status == 200
    assert "Access-Control-Allow-Origin" not in stranger.headers
    assert "Origin" in stranger.tokens("Vary")
    no_origin = await exchange(port, "GET", "/health/live")
    assert "Origin" in no_origin.tokens("Vary")


async def test_preflights_skip_authentication_and_errors_are_readable(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    client = await _cors_client(aiohttp_client, {**test_env, "AUTH_READS": "true"})
    port = client_port(client)
    preflight = await exchange(port, "OPTIONS", "/users", _preflight("GET", "authorization"))
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == APP
    refused = await exchange(port, "GET", "/users", {"Origin": APP})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP  # the page may read the 401
    assert "Origin" in refused.tokens("Vary")


async def test_curl_preflight(cors_client: Client, tmp_path: Path) -> None:
    url = str(cors_client.make_url("/users"))
    result = await curl(
        tmp_path, url, "--request", "OPTIONS",
        "--header", f"Origin: {APP}",
        "--header", "Access-Control-Request-Method: POST",
        "--header", "Access-Control-Request-Headers: content-type,authorization",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.status == 204
    assert result.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize(
    "origin",
    ["*", "null", "https://app.example.com/", "https://app.example.com/path", "app.example.com",
     "ftp://app.example.com", "https://App.Example.com", "https://user@app.example.com",
     "https://app.example.com:99999"],
)  # fmt: skip
def test_allowed_origins_must_be_exact_origins(test_env: dict[str, str], origin: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
        load_settings({**test_env, "CORS_ALLOW_ORIGINS": origin})
