"""Slow and hostile clients meet the shipped front (config/haproxy/haproxy.cfg), not the service.

One `python -m service` under a file limit of 256 behind HAProxy running the shipped file as
deployed (FRONT_BIND, BACKEND). Debian's slowhttptest sends slow headers (slowloris), slow
bodies (R-U-Dead-Yet) and slow reads, 400 connections each, through the front. Meanwhile a
client asks for /health/live and GET /users?limit=1 through the front, and a kubelet-like
prober asks the instance itself for /health/live and /health/ready, every 0.2 s: every answer
must be a 200 within a second, and the instance must stay far from its file limit.

Then the front's other promises, each from outside: a head that trickles in, a silent
connection and a stalled body are cut off by the front's request timeout; a connection flood
past the front's maxconn leaves the instance answering its probes; the service's access log
names the client the front saw, never one a client claims; what aiohttp's parser would
refuse (in plain text that may quote it) is refused by the front first; a request sent to
an instance that has just died is retried on another one.

The bare instance no longer holds off slowloris on its own (no connection cap, no head
timer): these promises are the front's.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.api import PROBLEM
from tests.helpers.front import Front
from tests.helpers.http import Reader, closed_within, connect, send_bytes
from tests.helpers.service import Service, running_service, wait_answered
from tests.helpers.tools import require_command

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

ATTACK_SECONDS = 8
FILE_LIMIT = 256
PROBE_TIMEOUT = 1.0
HEAD_TIMEOUT = 5.0  # the shipped `timeout http-request`
GET_LIVE = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
FRONT_MAXCONN = 1500  # the shipped frontend `maxconn`
MODES = {
    "slow headers": ["-H", "-i", "2", "-x", "24", "-u", "{base}/users"],
    "slow body": ["-B", "-i", "2", "-s", "8192", "-x", "24", "-f", "application/json",
                  "-u", "{base}/users"],
    "slow read": ["-X", "-k", "4", "-n", "1", "-w", "16", "-y", "64", "-z", "32",
                  "-u", "{base}/openapi.json"],
}  # fmt: skip


@dataclass
class Fronted:
    """The instance and the front before it."""

    service: Service
    front: Front


@pytest.fixture
def fronted(test_env: dict[str, str], tmp_path: Path) -> Iterator[Fronted]:
    """python -m service (one process) under `prlimit --nofile=256`, the front before it; the
    front is the service's trusted proxy, and every request is access-logged."""
    haproxy = require_command("haproxy", "haproxy")
    prlimit = require_command("prlimit", "util-linux")
    env = {**test_env, "ACCESS_LOG": "true", "LOG_LEVEL": "INFO", "TRUSTED_PROXIES": "127.0.0.1",
           "SHUTDOWN_DRAIN_SECONDS": "0"}  # fmt: skip
    prefix = [prlimit, f"--nofile={FILE_LIMIT}:{FILE_LIMIT}", "--"]
    with running_service("python -m service", env, tmp_path / "service.log", prefix) as service:
        front = Front(tmp_path, {"app": service.port})
        front.start(haproxy)
        try:
            wait_answered(f"{front.base}/health/live", timeout=10, process=front.process)
            yield Fronted(service, front)
        finally:
            front.stop()


@dataclass
class Probe:
    """Asks `paths` at `base` every 0.2 s until stopped; counts what did not answer 200
    within a second, and the most file descriptors `pid` held meanwhile."""

    base: str
    paths: tuple[str, ...]
    pid: int
    asked: int = 0
    most_files: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        fds = Path(f"/proc/{self.pid}/fd")
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.most_files = max(self.most_files, len(list(fds.iterdir())))
            for path in self.paths:
                self.asked += 1
                try:
                    with urllib.request.urlopen(self.base + path, timeout=PROBE_TIMEOUT) as r:  # noqa: S310
                        if r.status != 200:
                            self.failures.append(f"{path}: {r.status}")
                except OSError as error:
                    self.failures.append(f"{path}: {error!r}")
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def probing(*probes: Probe) -> Iterator[None]:
    """The probes run in threads while the block runs; stopped and joined after it."""
    threads = [threading.Thread(target=probe.run) for probe in probes]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for probe in probes:
            probe.stop()
        for thread in threads:
            thread.join()


def _probes(fronted: Fronted) -> tuple[Probe, Probe]:
    """A client through the front; a kubelet at the instance itself."""
    pid = fronted.service.process.pid
    client = Probe(fronted.front.base, ("/health/live", "/users?limit=1"), pid)
    kubelet = Probe(fronted.service.base, ("/health/live", "/health/ready"), pid)
    return client, kubelet


@pytest.mark.parametrize("mode", MODES)
def test_probes_keep_answering_while_slowhttptest_attacks_through_the_front(
    fronted: Fronted, mode: str, tmp_path: Path
) -> None:
    require_command("slowhttptest", "slowhttptest")
    args = [arg.format(base=fronted.front.base) for arg in MODES[mode]]
    command = ["slowhttptest", *args, "-c", "400", "-r", "200", "-l", str(ATTACK_SECONDS),
               "-p", "3"]  # fmt: skip
    client, kubelet = _probes(fronted)
    with probing(client, kubelet):
        attack = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=ATTACK_SECONDS + 30, cwd=tmp_path)  # fmt: skip
    output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", attack.stdout + attack.stderr)
    assert attack.returncode == 0, output[-2000:]
    # It ran to its time limit, or ended early because the front closed all it opened.
    assert re.search(r"Exit status: (Hit test time limit|No open connections left)", output), (
        output[-2000:]
    )
    assert not re.search(r"service available:\s+NO", output), output[-2000:]
    for probe in (client, kubelet):
        assert probe.asked >= 10, probe
        assert probe.failures == [], f"{len(probe.failures)} of {probe.asked}: {probe.failures[:5]}"
    # The attack's connections end at the front: the instance holds a few dozen files at
    # most (the front's connections to it are bounded by the per-server maxconn, 64).
    assert 0 < kubelet.most_files < FILE_LIMIT // 2, kubelet.most_files
    assert fronted.service.process.poll() is None
    log = fronted.service.log()
    assert "Traceback" not in log, log[-3000:]
    if mode == "slow body":  # no body was ever complete: not one reached the instance
        assert "] POST /users " not in log, log[-3000:]
    if mode == "slow read":  # the instance answered at once; the front holds the slow reader
        assert "] GET /openapi.json 200 " in log, log[-3000:]


def test_a_head_that_trickles_in_a_silent_connection_and_a_stalled_body_are_cut_off(
    fronted: Fronted,
) -> None:
    port = fronted.front.port
    writes_before = fronted.service.count(201) + fronted.service.count(400)
    with (
        connect(port) as idle,
        connect(port) as silent,
        connect(port) as trickle,
        connect(port) as stalled,
    ):
        idle_reader = Reader(idle)
        idle.sendall(GET_LIVE)
        assert idle_reader.response().status == 200
        answered = time.monotonic()
        stalled.sendall(
            b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"name": '
        )
        trickle.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        cut_after = None
        while time.monotonic() - started < HEAD_TIMEOUT + 10:
            try:
                trickle.sendall(b"X-Slow: a\r\n")
            except OSError:
                cut_after = time.monotonic() - started
                break
            if closed_within(trickle, 0.3):
                cut_after = time.monotonic() - started
                break
        assert cut_after is not None, "a head sent one header every 0.3 s was never cut off"
        assert cut_after < HEAD_TIMEOUT + 2, cut_after
        # One that sends nothing is cut off as well, long before any keep-alive timeout.
        assert closed_within(silent, 3)
        # A body that stops mid-way: 408 from the front, and the connection closes.
        response = Reader(stalled).response()
        assert response.status == 408, response
        assert response.headers["content-type"] == PROBLEM  # the shipped http-error
        assert closed_within(stalled, 3)
        # Idle after an answer (keep-alive, 10 s) for longer than the head timeout: not a
        # slow head, so the next request on it is answered.
        time.sleep(max(0.0, answered + HEAD_TIMEOUT + 0.5 - time.monotonic()))
        idle.sendall(GET_LIVE)
        assert idle_reader.response().status == 200
    # None of the three reached the instance.
    assert fronted.service.count(201) + fronted.service.count(400) == writes_before


ECHO = b"zq-echo-marker"  # what a refused request carries, and no answer or log line may
BIG = b"z" * 17000
MALFORMED = {
    "unknown method": b"FOO /users?" + ECHO + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "request line over 16 KiB": b"GET /" + ECHO + BIG + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "header over 16 KiB": b"GET /users HTTP/1.1\r\nHost: t\r\nX-Big: " + ECHO + BIG + b"\r\n\r\n",
    "NUL in a header": b"GET /users HTTP/1.1\r\nHost: t\r\nX-A: " + ECHO + b"\x00\r\n\r\n",
    "a control character in a header": b"GET /users HTTP/1.1\r\nHost: t\r\nX-A: " + ECHO
                                       + b"\x01\r\n\r\n",
    "missing Host": b"GET /users?" + ECHO + b" HTTP/1.1\r\n\r\n",
    "bad Transfer-Encoding": b"POST /users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + ECHO
                             + b"\r\n\r\n",
    "bad chunk size": b"POST /users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                      b"Content-Type: application/json\r\n\r\n" + ECHO + b"\r\n",
    "bad HTTP version": b"GET /users HTTP/7." + ECHO + b"\r\nHost: t\r\n\r\n",
}  # fmt: skip


def test_what_the_services_parser_would_refuse_never_reaches_it(fronted: Fronted) -> None:
    """aiohttp answers these itself, in plain text that may quote the request, and logs a
    line (test_connections.py); the front refuses them first, without the input."""
    for name, data in MALFORMED.items():
        with connect(fronted.front.port) as sock:
            sock.sendall(data)
            response = Reader(sock).response()
            assert response.status in (400, 501), (name, response)
            assert ECHO not in response.body, (name, response)
            assert "aiohttp" not in response.headers.get("server", ""), (name, response)
    assert send_bytes(fronted.front.port, GET_LIVE).status == 200
    time.sleep(0.5)  # the service writes its log lines within 0.25 s
    log = fronted.service.log()
    assert "refused a malformed request" not in log, log[-3000:]
    assert ECHO.decode() not in log, log[-3000:]


def test_a_connection_flood_past_the_fronts_maxconn_leaves_the_instance_answering_probes(
    fronted: Fronted,
) -> None:
    kubelet = _probes(fronted)[1]
    with ExitStack() as stack:
        for _ in range(FRONT_MAXCONN + 100):
            stack.enter_context(connect(fronted.front.port, timeout=5))
        # The flood is real: a new client waits behind it, unanswered within a second.
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(f"{fronted.front.base}/health/live", timeout=PROBE_TIMEOUT)  # noqa: S310
        with probing(kubelet):
            time.sleep(2)
    assert kubelet.asked >= 10, kubelet
    assert kubelet.failures == [], kubelet.failures[:5]
    assert kubelet.most_files < FILE_LIMIT // 2, kubelet.most_files
    # Once the flood has gone, the front answers again.
    wait_answered(f"{fronted.front.base}/health/live", timeout=HEAD_TIMEOUT + 5)


def test_the_access_log_names_the_client_the_front_saw_never_one_it_claims(
    fronted: Fronted,
) -> None:
    """The front is the service's trusted proxy (TRUSTED_PROXIES=127.0.0.1), so the service
    believes its X-Forwarded-For; a client's own header must never get that far."""
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "front-forged"}
    direct = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "direct-forged"}
    for base, headers in ((fronted.front.base, forged), (fronted.service.base, direct)):
        request = urllib.request.Request(f"{base}/users?limit=1", headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            assert response.status == 200

    def remote(request_id: str) -> str | None:
        for line in fronted.service.log().splitlines():
            if f"[{request_id}]" in line:
                return line.rsplit(" ", 1)[1]
        return None

    deadline = time.monotonic() + 5
    while remote("direct-forged") is None and time.monotonic() < deadline:
        time.sleep(0.1)  # access lines are written in batches
    # Straight from a trusted peer the header is believed (why the front must drop it)...
    assert remote("direct-forged") == "203.0.113.9"
    # ...through the front, the client is the address the front saw.
    assert remote("front-forged") == "127.0.0.1"


def test_a_request_to_an_instance_that_just_died_is_retried_on_another(
    fronted: Fronted, test_env: dict[str, str], tmp_path: Path
) -> None:
    """Reads and writes alike: a refused connection carried nothing of the request."""
    haproxy = require_command("haproxy", "haproxy")
    first = fronted.service
    with running_service("python -m service", test_env, tmp_path / "second.log") as second:
        both = tmp_path / "both"
        both.mkdir()
        front = Front(both, {"first": first.port, "second": second.port})
        front.start(haproxy)
        try:
            wait_answered(f"{front.base}/health/live", timeout=10)
            second.process.kill()  # a crash: the front's checks have not seen it yet
            second.process.wait()
            statuses = []
            started = time.monotonic()
            while time.monotonic() - started < 2.5:  # past the checks' detection (~1 s)
                statuses.append(_status(f"{front.base}/users?limit=1"))
                body = {"name": "Retried", "email": f"r-{uuid.uuid4().hex[:12]}@example.com"}
                statuses.append(_status(f"{front.base}/users", body))
            # With no instance left, the front's own 503, in the service's error format.
            first.process.kill()
            first.process.wait()
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{front.base}/users?limit=1", timeout=10)  # noqa: S310
        finally:
            front.stop()
    assert set(statuses) == {200, 201}, statuses
    # Some went to the dead one first and were redispatched ("+" before the retries count).
    assert re.search(r" \d+/\d+/\d+/\d+/\+\d+ ", front.log_text()), front.log_text()[-3000:]
    assert refused.value.code == 503
    assert refused.value.headers["Content-Type"] == PROBLEM
    assert refused.value.headers["Retry-After"] == "1"
    assert json.loads(refused.value.read())["status"] == 503


def _status(url: str, body: dict[str, str] | None = None) -> int:
    """The status of a GET (or a JSON POST of `body`), 4xx and 5xx included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
