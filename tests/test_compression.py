"""gzip per RFC 9110 §12.5.3 and §8.8.3, judged by curl and by the bytes on the wire.

Bodies of at least `compression.min_bytes` are gzip-coded for clients whose
Accept-Encoding admits gzip (q=0 refuses it), always with `Vary: Accept-Encoding`. The
gzip representation has its own strong ETag, which preconditions accept like the identity
one. Tiny bodies, 304s and HEAD answers are never coded.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from service.app import create_app
from service.http.compression import COMPRESSION, accepts_gzip
from service.settings.loading import load_settings
from service.settings.model import ConfigError
from tests.helpers.app import AiohttpClient, Client, client_port, ready_client
from tests.helpers.http import curl, exchange

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver


async def _user_with_orders(client: Client, orders: int = 12) -> dict[str, Any]:
    email = f"ada-{uuid.uuid4().hex[:12]}@example.com"
    response = await client.post("/users", json={"name": "Ada", "email": email})
    assert response.status == 201
    user: dict[str, Any] = await response.json()
    for n in range(orders):
        placed = await client.post(
            f"/users/{user['id']}/orders",
            json={"amount": 100 + n, "items": [{"sku": f"SKU-{n:04d}", "quantity": 1}]},
        )
        assert placed.status == 201
    return user


async def test_curl_compressed_decodes_what_the_service_compressed(
    client: Client, tmp_path: Path
) -> None:
    user = await _user_with_orders(client)
    for path in (f"/users/{user['id']}", f"/users/{user['id']}/orders?limit=100"):
        url = str(client.make_url(path))
        plain = await curl(tmp_path, url)
        coded = await curl(tmp_path, url, "--compressed")
        assert plain.returncode == coded.returncode == 0, coded.stderr
        assert plain.status == coded.status == 200
        assert "Content-Encoding" not in plain.headers
        assert coded.headers["Content-Encoding"] == "gzip"
        assert len(plain.body) >= 1024
        assert int(coded.headers["Content-Length"]) < len(plain.body) / 3
        assert orjson.loads(coded.body) == orjson.loads(plain.body)  # curl decoded it
        for result in (plain, coded):
            assert "Accept-Encoding" in [v.strip() for v in result.headers["Vary"].split(",")]


@pytest.mark.parametrize(
    ("accept", "coded"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip ; q=1.000", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("br, zstd", False),
        ("gzip;q=abc", False),
        ("gzip;q=1.5", False),
        ("", False),
    ],
)
async def test_accept_encoding_is_honoured(client: Client, accept: str, coded: bool) -> None:
    user = await _user_with_orders(client)
    path = f"/users/{user['id']}"
    plain = await exchange(client_port(client), "GET", path)
    response = await exchange(client_port(client), "GET", path, {"Accept-Encoding": accept})
    assert response.status == 200
    assert "Accept-Encoding" in response.tokens("Vary")
    assert response.headers.get("Content-Encoding") == ("gzip" if coded else None)
    body = gzip.decompress(response.body) if coded else response.body
    assert body == plain.body
    assert response.headers["Content-Length"] == str(len(response.body))
    assert accepts_gzip(accept) is coded


async def test_the_gzip_representation_has_its_own_strong_etag(client: Client) -> None:
    user = await _user_with_orders(client)
    path = f"/users/{user['id']}"
    port = client_port(client)
    plain = await exchange(port, "GET", path)
    coded = await exchange(port, "GET", path, {"Accept-Encoding": "gzip"})
    identity_tag, gzip_tag = plain.headers["ETag"], coded.headers["ETag"]
    assert gzip_tag != identity_tag
    assert not gzip_tag.startswith("W/")  # deterministic bytes: still a strong validator
    again = await exchange(port, "GET", path, {"Accept-Encoding": "gzip"})
    assert again.body == coded.body
    assert again.headers["ETag"] == gzip_tag
    # Either tag names the current state: a 304 names the tag of what would have been sent.
    for held in (identity_tag, gzip_tag, f"W/{gzip_tag}"):
        for accept, expected in (("gzip", gzip_tag), ("identity", identity_tag)):
            headers = {"If-None-Match": held, "Accept-Encoding": accept}
            cached = await exchange(port, "GET", path, headers)
            assert cached.status == 304, (held, accept)
            assert cached.headers["ETag"] == expected
            assert "Accept-Encoding" in cached.tokens("Vary")
            assert cached.body == b""
            assert "Content-Encoding" not in cached.headers
    # A write conditional on the gzip tag goes through (the same version of the user).
    patched = await client.patch(path, json={"name": "Grace"}, headers={"If-Match": gzip_tag})
    assert patched.status == 200
    stale = await client.patch(path, json={"name": "Eve"}, headers={"If-Match": gzip_tag})
    assert stale.status == 412


async def test_small_bodies_and_head_answers_are_not_compressed(client: Client) -> None:
    user = await _user_with_orders(client)
    port = client_port(client)
    gzip_ok = {"Accept-Encoding": "gzip"}
    small = await exchange(port, "GET", "/health/live", gzip_ok)
    assert small.status == 200
    assert "Content-Encoding" not in small.headers
    assert "Vary" not in small.headers
    path = f"/users/{user['id']}"
    plain = await exchange(port, "GET", path)
    head = await exchange(port, "HEAD", path, gzip_ok)
    assert head.status == 200
    assert head.body == b""
    assert "Content-Encoding" not in head.headers
    assert head.headers["Content-Length"] == str(len(plain.body))
    assert head.headers["ETag"] == plain.headers["ETag"]
    assert "Accept-Encoding" in head.tokens("Vary")


async def _client_with(aiohttp_client: AiohttpClient, env: dict[str, str]) -> Client:
    app: web.Application = create_app(load_settings(env))
    return await ready_client(aiohttp_client, app)


async def test_compression_settings(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    for env in ({"COMPRESSION": "false"}, {"COMPRESS_MIN_BYTES": "1000000"}):
        client = await _client_with(aiohttp_client, {**test_env, **env})
        user = await _user_with_orders(client, orders=3)
        response = await exchange(
            client_port(client), "GET", f"/users/{user['id']}", {"Accept-Encoding": "gzip"}
        )
        assert response.status == 200
        assert "Content-Encoding" not in response.headers, env
        assert "Vary" not in response.headers, env
        await client.close()
    client = await _client_with(aiohttp_client, {**test_env, "COMPRESS_MIN_BYTES": "10"})
    response = await exchange(
        client_port(client), "GET", "/health/live", {"Accept-Encoding": "gzip"}
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(response.body)) == {"status": "ok"}
    for bad in ({"COMPRESS_LEVEL": "0"}, {"COMPRESS_MIN_BYTES": "0"}, {"COMPRESSION": "maybe"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_settings({**test_env, **bad})


async def test_a_cached_representation_is_compressed_once(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    client = await _client_with(aiohttp_client, {**test_env, "CACHE_BACKEND": "memory"})
    user = await _user_with_orders(client, orders=5)
    path = f"/users/{user['id']}"
    first = await exchange(client_port(client), "GET", path, {"Accept-Encoding": "gzip"})
    second = await exchange(client_port(client), "GET", path, {"Accept-Encoding": "gzip"})
    assert first.body == second.body
    assert client.app is not None
    compression = client.app[COMPRESSION]
    plain = (await exchange(client_port(client), "GET", path)).body
    assert compression.gzip(plain) is compression.gzip(plain)
    assert gzip.decompress(compression.gzip(plain)) == plain
    page = (await exchange(client_port(client), "GET", "/users?limit=100")).body
    assert compression.gzip(page, remember=False) is not compression.gzip(page, remember=False)
