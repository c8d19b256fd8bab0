"""A cached representation's 200, read off the wire.

Checked with h11, a strict HTTP/1.1 parser, on a real `python -m service` with the memory
cache, since a hit is where the service adds the most headers around prebuilt bytes: each
header once, the right
Content-Length, keep-alive as the request asked (HTTP/1.0 and `Connection: close`
included), HEAD without a body, gzip, and CORS's Vary joined to the representation's own.
"""

from __future__ import annotations

import gzip
import json
import socket
import urllib.request
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import h11
import pytest

from tests.helpers.http import closed_within, connect
from tests.helpers.metrics import parse, total
from tests.helpers.service import Service, running_service

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

APP = "https://app.example.com"
_PER_MESSAGE = {b"date", b"x-request-id"}


@pytest.fixture
def service(test_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    env = {**test_env, "CACHE_BACKEND": "memory", "CORS_ALLOW_ORIGINS": APP}
    with running_service("python -m service", env, tmp_path / "service.log") as running:
        yield running


@pytest.fixture
def user_path(service: Service) -> str:
    """A user with orders large enough to be gzipped, read once so the cache holds it."""
    body = json.dumps({"name": "Ada", "email": "ada@example.com"}).encode()
    created = _post(service, "/users", body)
    for amount in range(1, 12):
        order = json.dumps({"amount": amount, "items": [{"sku": f"SKU-{amount}", "quantity": 1}]})
        _post(service, f"/users/{created['id']}/orders", order.encode())
    path = f"/users/{created['id']}"
    with urllib.request.urlopen(service.base + path, timeout=10) as reply:  # noqa: S310
        assert reply.status == 200  # a miss: stored now
    return path


def _post(service: Service, path: str, body: bytes) -> dict[str, str]:
    request = urllib.request.Request(  # noqa: S310 - a local test server
        service.base + path, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        assert reply.status == 201
        created: dict[str, str] = json.loads(reply.read())
        return created


def _hits(service: Service) -> float:
    return total(parse(service.metrics()), "cache_hits_total", cache="user")


class Answer:
    """One response as h11 parsed it: status, headers (lower-case names, in order), body."""

    def __init__(self, response: h11.Response, body: bytes) -> None:
        self.status = response.status_code
        self.version = response.http_version
        self.fields = [(bytes(name), bytes(value)) for name, value in response.headers]
        self.body = body

    def one(self, name: bytes) -> bytes:
        values = [value for field, value in self.fields if field == name]
        assert len(values) == 1, f"{name!r} sent {len(values)} times: {self.fields}"
        return values[0]

    def comparable(self) -> list[tuple[bytes, bytes]]:
        return sorted(field for field in self.fields if field[0] not in _PER_MESSAGE)


def _wire(request: h11.Request, version: bytes) -> bytes:
    if version == b"1.1":
        writer = h11.Connection(h11.CLIENT)
        return writer.send(request) + writer.send(h11.EndOfMessage())
    # h11 writes only HTTP/1.1 requests: this one by hand.
    head = b"%s %s HTTP/%s\r\n" % (request.method, request.target, version)
    return head + b"".join(b"%s: %s\r\n" % field for field in request.headers) + b"\r\n"


def _exchange(
    sock: socket.socket, requests: list[h11.Request], version: bytes = b"1.1"
) -> tuple[list[Answer], bool]:
    """Send `requests` on one connection (pipelined), read their answers with h11, and
    whether the server then closed the connection."""
    sock.sendall(b"".join(_wire(request, version) for request in requests))
    parser = h11.Connection(h11.CLIENT)
    answers: list[Answer] = []
    for request in requests:
        if answers:
            parser.start_next_cycle()
        parser.send(request)  # what the parser expects back depends on it (HEAD: no body)
        parser.send(h11.EndOfMessage())
        response, body = None, b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            else:
                assert isinstance(event, h11.EndOfMessage), event
                break
        assert response is not None
        answers.append(Answer(response, body))
    return answers, closed_within(sock, 2)


def _get(path: str, *headers: tuple[str, str], method: str = "GET") -> h11.Request:
    return h11.Request(method=method, target=path, headers=[("Host", "127.0.0.1"), *headers])


def test_a_hit_is_well_formed_and_keeps_the_connection(service: Service, user_path: str) -> None:
    before = _hits(service)
    with connect(service.port) as sock:
        (first, second), closed = _exchange(sock, [_get(user_path), _get(user_path)])
    assert _hits(service) - before == 2
    assert not closed  # keep-alive: the server waits for a third request
    for answer in (first, second):
        assert answer.status == 200
        assert answer.version == b"1.1"
        assert int(answer.one(b"content-length")) == len(answer.body)
        assert answer.one(b"content-type") == b"application/json"
        assert answer.one(b"etag").startswith(b'"')
        assert answer.one(b"vary") == b"Accept-Encoding, Origin"
        assert answer.one(b"server") == b"user-service"
        assert answer.one(b"x-content-type-options") == b"nosniff"
        assert parsedate_to_datetime(answer.one(b"date").decode()).tzinfo is not None
        assert len(answer.one(b"x-request-id")) == 32
        assert json.loads(answer.body)["user"]["name"] == "Ada"
    assert first.comparable() == second.comparable()
    assert first.one(b"x-request-id") != second.one(b"x-request-id")
    assert first.body == second.body


def test_head_of_a_hit_has_the_get_headers_and_no_body(service: Service, user_path: str) -> None:
    with connect(service.port) as sock:
        (head, get), _ = _exchange(sock, [_get(user_path, method="HEAD"), _get(user_path)])
    assert head.status == 200
    assert head.body == b""
    assert head.comparable() == get.comparable()
    assert int(head.one(b"content-length")) == len(get.body) > 0


def test_connection_close_is_announced_and_done(service: Service, user_path: str) -> None:
    with connect(service.port) as sock:
        (answer,), closed = _exchange(sock, [_get(user_path, ("Connection", "close"))])
    assert answer.status == 200
    assert answer.one(b"connection") == b"close"
    assert closed


@pytest.mark.parametrize(("asked", "kept"), [((), False), ((("Connection", "keep-alive"),), True)])
def test_http_1_0(
    service: Service, user_path: str, asked: tuple[tuple[str, str], ...], kept: bool
) -> None:
    """An HTTP/1.0 client gets an HTTP/1.0 answer; kept open only if it asked to be."""
    with connect(service.port) as sock:
        (answer,), closed = _exchange(sock, [_get(user_path, *asked)], version=b"1.0")
    assert answer.status == 200
    assert answer.version == b"1.0"
    assert int(answer.one(b"content-length")) == len(answer.body)
    assert closed is not kept
    connection = [value for name, value in answer.fields if name == b"connection"]
    assert connection == ([b"keep-alive"] if kept else [])


def test_gzip_hit(service: Service, user_path: str) -> None:
    with connect(service.port) as sock:
        (plain, coded), _ = _exchange(
            sock, [_get(user_path), _get(user_path, ("Accept-Encoding", "gzip"))]
        )
    assert coded.one(b"content-encoding") == b"gzip"
    assert int(coded.one(b"content-length")) == len(coded.body) < len(plain.body)
    assert gzip.decompress(coded.body) == plain.body
    assert coded.one(b"etag") == plain.one(b"etag")[:-1] + b'-gzip"'


def test_cors_headers_join_the_representation(service: Service, user_path: str) -> None:
    with connect(service.port) as sock:
        (answer,), _ = _exchange(sock, [_get(user_path, ("Origin", APP))])
    assert answer.one(b"vary") == b"Accept-Encoding, Origin"
    assert answer.one(b"access-control-allow-origin") == APP.encode()
    assert b"ETag" in answer.one(b"access-control-expose-headers")
