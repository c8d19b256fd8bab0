"""The connection layer of the real servers, over raw sockets (RFC 9110 / RFC 9112).

Keep-alive and header timeouts, the same under python -m service and gunicorn; 408 for a
body that stalls and 413 before any 100 Continue; problem+json for what the HTTP parser
refuses; slow bodies that take no in-flight slot; the per-process connection cap.
"""

from __future__ import annotations

import json
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.server.guard import ConnectionGuard, connection_cap
from service.settings.loading import load_settings
from service.settings.model import ConfigError, Settings
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
        HEADER_TIMEOUT_SECONDS="30",
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
    env = _env(test_env, KEEPALIVE_TIMEOUT_SECONDS="1.5", HEADER_TIMEOUT_SECONDS="30")
    with running_service(kind, env, tmp_path / "s.log") as service, connect(service.port) as sock:
        sock.sendall(GET_LIVE)
        assert Reader(sock).response().status == 200
        # aiohttp's default was 3630 s under python -m service, gunicorn's 75 s under it.
        assert closed_within(sock, 15), "an idle connection stayed open"


@pytest.mark.parametrize("kind", ["python -m service", "gunicorn"])
def test_a_request_head_that_trickles_in_is_cut_off(
    kind: str, test_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(test_env, HEADER_TIMEOUT_SECONDS="1", KEEPALIVE_TIMEOUT_SECONDS="60")
    with running_service(kind, env, tmp_path / "s.log") as service:
        with connect(service.port) as silent, connect(service.port) as trickle:
            trickle.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 20:
                try:
                    trickle.sendall(b"X-Slow: a\r\n")
                except OSError:
                    closed = True
                    break
                if closed_within(trickle, 0.3):
                    closed = True
                    break
            assert closed, "a head sent one header every 0.3 s was never cut off"
            # One that connects and sends nothing is cut off too, long before keep-alive.
            assert closed_within(silent, 15)
        # A head sent after an answer on the same connection is timed from its first byte.
        with connect(service.port) as sock:
            reader = Reader(sock)
            for _ in range(3):
                sock.sendall(GET_LIVE)
                assert reader.response().status == 200
                time.sleep(1.3)  # idle (keep-alive), not a slow head
            sock.sendall(GET_LIVE)
            assert reader.response().status == 200


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
def test_what_the_parser_refuses_is_answered_as_problem_json(service: Service, name: str) -> None:
    data, status = PARSER_ERRORS[name]
    before = service.count(status)
    log_start = len(service.log())
    response = send_bytes(service.port, data)
    assert response.status == status, response
    assert response.headers["content-type"] == PROBLEM
    assert json.loads(response.body)["status"] == status
    assert ECHO not in response.body
    assert len(response.headers.get("x-request-id", "")) >= 16
    assert response.headers.get("x-content-type-options") == "nosniff"

    def counted() -> bool:
        return service.count(status) == before + 1

    assert _eventually(counted), f"{name}: not counted in http_requests_total"
    logged = service.log()[log_start:]
    assert "Traceback" not in logged, logged
    assert "ERROR" not in logged, logged
    assert ECHO.decode() not in logged
    assert sum("WARNING" in line for line in logged.splitlines()) <= 1, logged


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


@pytest.mark.parametrize("kind", ["python -m service", "gunicorn"])
def test_at_the_connection_cap_idle_connections_make_room_and_probes_answer(
    kind: str, test_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(
        test_env, MAX_CONNECTIONS="20", MAX_IN_FLIGHT="8", HEADER_TIMEOUT_SECONDS="60",
        KEEPALIVE_TIMEOUT_SECONDS="60",
    )  # fmt: skip
    with (
        running_service(kind, env, tmp_path / "s.log") as service,
        ExitStack() as stack,
    ):
        slow = []
        for _ in range(60):
            sock = stack.enter_context(connect(service.port))
            sock.sendall(b"GET /users HTTP/1.1\r\nHost: t\r\n")  # and never the rest
            slow.append(sock)
        for _ in range(10):
            assert send_bytes(service.port, GET_LIVE).status == 200
        # The oldest slow heads were closed to make room: no more than the cap are held.
        still_open = sum(not closed_within(sock, 0.05) for sock in slow)
        assert still_open <= 20, still_open


def test_connection_cap_is_checked_against_max_in_flight(test_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="max_connections"):
        load_settings({**test_env, "MAX_CONNECTIONS": "32", "MAX_IN_FLIGHT": "64"})


class _Connection:
    def __init__(self) -> None:
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def test_the_guard_closes_the_longest_idle_connection_and_never_a_busy_one() -> None:
    guard = ConnectionGuard(3, clock=lambda: 0.0)
    a, b, c, d, e = (_Connection() for _ in range(5))
    for connection in (a, b, c):
        assert guard.admit(connection)
    guard.busy(a)  # running a request
    guard.idle(b)  # answered again: now the most recently idle
    assert guard.admit(d)
    assert (a.evicted, b.evicted, c.evicted) == (False, False, True)
    guard.busy(b)
    guard.busy(d)
    assert not guard.admit(e)  # every connection is running a request: refused
    assert (guard.open, guard.evicted, guard.refused) == (3, 1, 1)
    guard.release(a)
    assert guard.admit(e)


def test_the_cap_is_lowered_to_fit_the_file_limit(settings: Settings) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        cap = connection_cap(settings.server, pool_size=100)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert settings.server.max_in_flight < cap <= 256 - 100


def test_connections_closed_at_the_cap_mid_body_leave_no_traceback(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    """Closed while the body is awaited, or before its read began: a 408, quietly."""
    env = _env(test_env, MAX_CONNECTIONS="20", MAX_IN_FLIGHT="8", BODY_TIMEOUT_SECONDS="60")
    with running_service("python -m service", env, tmp_path / "s.log") as service:
        with ExitStack() as stack:
            for _ in range(3):
                for _ in range(40):
                    sock = stack.enter_context(connect(service.port))
                    sock.sendall(
                        b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 60\r\n\r\n{"na'
                    )
                time.sleep(0.3)
            assert send_bytes(service.port, GET_LIVE).status == 200
        assert _eventually(lambda: service.count(408, route="/users") >= 60)
        log = service.log()
        assert "Traceback" not in log, log[-3000:]
        assert "ERROR" not in log, log[-3000:]
