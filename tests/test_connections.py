"""The connection layer of a bare instance, over raw sockets (RFC 9110 / RFC 9112).

The keep-alive timeout, the same under python -m service and gunicorn; 408 for a body that
stalls and 413 before any 100 Continue; what the HTTP parser refuses; slow bodies that
take no in-flight slot. Slow heads and connection floods are the front's (test_front.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers.api import PROBLEM
from tests.helpers.http import Reader, closed_within, connect, send_bytes
from tests.helpers.servers import MongoServer
from tests.helpers.service import Service, running_service

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

ECHO = b"zq-echo-marker"  # what a refused request carries, and its answer must not


def _env(test_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**test_env, "ACCESS_LOG": "true", "LOG_LEVEL": "INFO", **extra}


@pytest.fixture(scope="module")
def module_env(mongo_server: MongoServer) -> dict[str, str]:
    return {
        "SERVICE_ENV": "test",
        "MONGO_URL": mongo_server.url,
        "MONGO_DB": f"t_{uuid.uuid4().hex[:16]}",
    }


@pytest.fixture(scope="module")
def service(
    module_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One python -m service for the tests that only send and read."""
    env = _env(
        module_env,
        BODY_TIMEOUT_SECONDS="1",
        KEEPALIVE_TIMEOUT_SECONDS="60",
    )
    log = tmp_path_factory.mktemp("conn") / "service.log"
    with running_service("python -m service", env, log) as running:
        yield running


GET_LIVE = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("kind", ["python -m service", "gunicorn"])
def test_an_idle_keep_alive_connection_closes_after_the_keepalive_timeout(
    kind: str, test_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(test_env, KEEPALIVE_TIMEOUT_SECONDS="1.5")
    with running_service(kind, env, tmp_path / "s.log") as service, connect(service.port) as sock:
        sock.sendall(GET_LIVE)
        assert Reader(sock).response().status == 200
        # aiohttp's default was 3630 s under python -m service, gunicorn's 75 s under it.
        assert closed_within(sock, 15), "an idle connection stayed open"


def test_a_stalled_body_gets_408_and_the_connection_closes(service: Service) -> None:
    before = service.count(408)
    with connect(service.port) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"name": '
        )
        response = Reader(sock).response()
        assert response.status == 408, response
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["connection"] == "close"
        assert "x-request-id" in response.headers
        assert json.loads(response.body)["status"] == 408
        assert closed_within(sock, 5), "the connection lingered after the 408"
    assert service.count(408, route="/users") == before + 1
    assert service.count(503) == 0


@pytest.mark.parametrize("expect", [True, False])
def test_a_declared_length_over_the_limit_gets_413_before_any_100_continue(
    service: Service, expect: bool
) -> None:
    with connect(service.port) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n" + (b"Expect: 100-continue\r\n" if expect else b"")
            + b"\r\n"
        )  # fmt: skip
        response = Reader(sock).response(final=False)
        assert response.status == 413, response
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["connection"] == "close"
        assert "x-request-id" in response.headers


def test_a_body_within_the_limit_still_gets_100_continue(service: Service) -> None:
    body = b'{"name": "Continue", "email": "continue@example.com"}'
    with connect(service.port) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        reader = Reader(sock)
        assert reader.response(final=False).status == 100
        sock.sendall(body)
        assert reader.response().status == 201


BIG = b"z" * 17000
PARSER_ERRORS = {
    "unknown method": (b"FOO /users?" + ECHO + b" HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    "request line over 16 KiB": (b"GET /" + ECHO + BIG + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    "header over 16 KiB": (b"GET /users HTTP/1.1\r\nHost: t\r\nX-Big: " + ECHO + BIG + b"\r\n\r\n",
                           431),
    "NUL in a header": (b"GET /users HTTP/1.1\r\nHost: t\r\nX-A: " + ECHO + b"\x00\r\n\r\n", 400),
    "missing Host": (b"GET /users?" + ECHO + b" HTTP/1.1\r\n\r\n", 400),
    "bad Transfer-Encoding": (b"POST /users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + ECHO
                              + b"\r\n\r\n", 400),
    "bad chunk size": (b"POST /users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Type: application/json\r\n\r\n" + ECHO + b"\r\n", 400),
    "unsupported Content-Encoding": (b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                                     b"Content-Type: application/json\r\n"
                                     b"Content-Encoding: br\r\n\r\n{}", 415),
    "bad HTTP version": (b"GET /users HTTP/7." + ECHO + b"\r\nHost: t\r\n\r\n", 400),
}  # fmt: skip


@pytest.mark.parametrize("name", PARSER_ERRORS)
def test_what_the_parser_refuses_is_closed_and_logged_in_one_line(
    service: Service, name: str
) -> None:
    """aiohttp answers these before any middleware (aio-libs/aiohttp#3287), in plain text
    that may quote the input; the front refuses them first (test_front.py). What the
    instance itself promises: an error status, the connection closed, the worker still
    serving, and one WARNING line without a traceback or the input."""
    data, _ = PARSER_ERRORS[name]
    log_start = len(service.log())
    with connect(service.port) as sock:
        sock.sendall(data)
        response = Reader(sock).response()
        assert 400 <= response.status < 600, response
        assert closed_within(sock, 5), "the connection stayed open after a refused request"
    assert send_bytes(service.port, GET_LIVE).status == 200

    def logged() -> str:
        return service.log()[log_start:]

    # An unknown method on a connection's first request is what TLS sent to a plain port
    # looks like: aiohttp logs that at DEBUG only.
    lines = 0 if name == "unknown method" else 1
    if lines:
        assert _eventually(lambda: "refused a malformed request" in logged()), logged()
    assert "Traceback" not in logged(), logged()
    assert "ERROR" not in logged(), logged()
    assert ECHO.decode() not in logged()
    assert sum("WARNING" in line for line in logged().splitlines()) == lines, logged()


def _eventually(check: object, seconds: float = 5.0) -> bool:
    assert callable(check)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_bodies_that_trickle_in_take_no_in_flight_slot(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    """Before: the slot was taken before the body was read, so slow bodies starved reads."""
    env = _env(test_env, MAX_IN_FLIGHT="2", BODY_TIMEOUT_SECONDS="30")
    with (
        running_service("python -m service", env, tmp_path / "s.log") as service,
        ExitStack() as stack,
    ):
        for _ in range(6):
            sock = stack.enter_context(connect(service.port))
            sock.sendall(
                b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b'Content-Length: 60\r\n\r\n{"na'
            )
        time.sleep(0.5)  # let the server take them all in
        statuses = [
            send_bytes(service.port, b"GET /users?limit=1 HTTP/1.1\r\nHost: t\r\n\r\n").status
            for _ in range(10)
        ]
        assert statuses == [200] * 10
