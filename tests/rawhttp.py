"""A real service process for connection-level tests, and raw-socket HTTP/1.1 helpers.

Connection behaviour (keep-alive, timeouts, the parser's answers) is the server's, not the
app's, so these tests run `python -m service` or gunicorn as a child process and talk to it
with plain sockets, byte by byte as a hostile or careless client would.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def count(self, status: int, route: str | None = None) -> float:
        """The sum of http_requests_total over the series with this status (and route)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith("http_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("status") == str(status) and route in (None, labels.get("route")):
                total += float(line.rsplit(" ", 1)[1])
        return total


def command(kind: str, prefix: Sequence[str] = ()) -> list[str]:
    if kind == "gunicorn":
        return [*prefix, str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"]
    return [*prefix, sys.executable, "-m", "service"]


@contextmanager
def running_service(
    kind: str,
    env: dict[str, str],
    log_path: Path,
    prefix: Sequence[str] = (),
) -> Iterator[Service]:
    """The service on a free port until the block ends; stopped by its own pid."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "1", **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(kind, prefix), cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout=30, process=process)
        service = Service(process, port, log_path)
        _wait_live(service)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_live(service: Service) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{service.port}/health/live", timeout=2
            ) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the service never answered /health/live")


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx answers seen before this one


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads HTTP/1.1 responses off a socket, keeping what arrives past each one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; buffered {self.buffer[:200]!r}")
        self.buffer += chunk

    def response(self, final: bool = True) -> Response:
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buffer:
                self._fill()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            version, status, *reason = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= int(status) < 200 and final:
                interim.append(int(status))
                continue
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                self._fill()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return Response(int(status), " ".join(reason), version, headers, body, interim)


def exchange(port: int, data: bytes) -> Response:
    """Send raw bytes on a fresh connection and read the one answer."""
    with connect(port) as sock:
        sock.sendall(data)
        return Reader(sock).response()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within `seconds`; data is drained."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False
