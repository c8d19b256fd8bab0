"""HEAD, 405 and Allow per RFC 9110 §9.1, §9.3.2 and §15.5.6, read off the wire.

HEAD must answer exactly as GET would, without a body: same status and headers (ETag,
Content-Type, the Content-Length of the GET body), through the same pipeline (auth,
metrics, access log). A 405 names every allowed method, HEAD wherever GET is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.settings.loading import load_settings
from tests.helpers.app import AiohttpClient, Client, access_lines, json_log_app
from tests.helpers.http import RawResponse, curl, exchange
from tests.helpers.servers import free_port

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

# Hop-by-hop or per-message headers that legitimately differ between two answers.
_PER_MESSAGE = {"date", "x-request-id", "connection"}


async def _user(client: Client) -> dict[str, Any]:
    response = await client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    assert response.status == 201
    user: dict[str, Any] = await response.json()
    order = await client.post(f"/users/{user['id']}/orders", json={"amount": 7})
    assert order.status == 201
    user["order"] = await order.json()
    return user


def _comparable(response: RawResponse) -> dict[str, list[str]]:
    return {
        name.lower(): response.headers.getall(name)
        for name in response.headers
        if name.lower() not in _PER_MESSAGE
    }


async def test_head_answers_like_get_without_a_body(client: Client) -> None:
    user = await _user(client)
    port = client.port
    assert port is not None
    paths = [
        f"/users/{user['id']}",
        "/users",
        f"/users/{user['id']}/orders",
        f"/orders/{user['order']['id']}",
        "/users/nobody",  # a 404 problem+json
        "/health/live",
        "/health/ready",
        "/openapi.json",
        "/metrics",
    ]
    for path in paths:
        get = await exchange(port, "GET", path)
        head = await exchange(port, "HEAD", path)
        assert head.status == get.status, path
        assert head.body == b"", f"HEAD {path} sent a body"
        if path == "/metrics":  # the scrape body (so its length) changes between two scrapes
            assert int(head.headers["Content-Length"]) > 0
            continue
        assert head.headers.get("Content-Length") == str(len(get.body)), path
        assert _comparable(head) == _comparable(get), path
    etag = (await exchange(port, "GET", f"/users/{user['id']}")).headers["ETag"]
    cached = await exchange(port, "HEAD", f"/users/{user['id']}", {"If-None-Match": etag})
    assert cached.status == 304
    assert cached.headers["ETag"] == etag
    assert cached.body == b""


async def test_curl_head_sees_the_get_headers(client: Client, tmp_path: Path) -> None:
    user = await _user(client)
    url = str(client.make_url(f"/users/{user['id']}"))
    head = await curl(tmp_path, url, "--head")
    get = await curl(tmp_path, url)
    assert head.returncode == 0, head.stderr
    assert head.status == get.status == 200
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Content-Length"] == str(len(get.body))


async def test_405_allow_lists_head_wherever_get_is_allowed(client: Client) -> None:
    port = client.port
    assert port is not None
    expected = {
        "/users": {"GET", "HEAD", "POST"},
        "/users/u1": {"GET", "HEAD", "PATCH", "DELETE"},
        "/users/u1/orders": {"GET", "HEAD", "POST"},
        "/orders/o1": {"GET", "HEAD"},
        "/health/live": {"GET", "HEAD"},
    }
    for path, allowed in expected.items():
        for method in ("PUT", "OPTIONS"):
            response = await exchange(port, method, path)
            assert response.status == 405, (method, path)
            assert set(response.tokens("Allow")) == allowed, (method, path)
            assert response.headers["Content-Type"] == "application/problem+json"


async def test_head_is_counted_logged_and_authorized_like_get(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    reader = "reader-token-0123456789"
    settings = load_settings({**test_env, "API_TOKENS": f"{reader}:read", "AUTH_READS": "true"})
    app = json_log_app(settings)
    client = await aiohttp_client(app)
    port = client.port
    assert port is not None
    refused = await exchange(port, "HEAD", "/users")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    allowed = await exchange(port, "HEAD", "/users", {"Authorization": f"Bearer {reader}"})
    assert allowed.status == 200
    assert allowed.body == b""
    metrics = await (await client.get("/metrics")).text()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{") and 'method="HEAD"' in line
    ]
    assert any('route="/users"' in line and 'status="200"' in line for line in counted), counted
    assert any('route="/users"' in line and 'status="401"' in line for line in counted), counted
    heads = [(line["method"], line["route"], line["status"]) for line in access_lines(app)]
    assert ("HEAD", "/users", 401) in heads
    assert ("HEAD", "/users", 200) in heads


async def test_the_metrics_port_answers_head(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    port = free_port()
    client = await aiohttp_client(
        create_app(load_settings({**test_env, "METRICS_PORT": str(port)}))
    )
    assert client.port is not None
    get = await exchange(port, "GET", "/metrics")
    head = await exchange(port, "HEAD", "/metrics")
    assert get.status == head.status == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    for response in (get, head):
        assert "aiohttp" not in response.headers.get("Server", "").lower()


async def test_server_header_does_not_advertise_versions(client: Client) -> None:
    port = client.port
    assert port is not None
    for method, path in (("GET", "/health/live"), ("GET", "/nowhere"), ("PUT", "/users")):
        response = await exchange(port, method, path)
        server = response.headers.get("Server", "")
        assert "python" not in server.lower(), server
        assert "aiohttp" not in server.lower(), server
