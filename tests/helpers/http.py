"""Real HTTP clients for protocol tests: raw sockets (bytes as sent) and curl.

aiohttp's test client reads what aiohttp writes with aiohttp's own parser, so it cannot tell
whether a HEAD answer carried a body, or which headers arrived twice. These read the bytes.
Connection behaviour (keep-alive, timeouts, the parser's answers) is the server's, so the
blocking socket helpers below talk to a service child process byte by byte, as a hostile or
careless client would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.helpers.tools import require_command

Headers = Iterable[tuple[str, str]] | dict[str, str]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes  # everything after the head until the server closed the connection

    def tokens(self, name: str) -> list[str]:
        """A list-valued header's elements across all its fields, e.g. Vary or Allow."""
        return [
            part.strip()
            for value in self.headers.getall(name, [])
            for part in value.split(",")
            if part.strip()
        ]


async def until_ready(http: aiohttp.ClientSession, base: str, timeout: float = 10.0) -> None:
    """Until the service at `base` answers /health/ready with 200 (its indexes exist)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(f"{base}/health/ready") as ready:
            if ready.status == 200:
                return
        if loop.time() > deadline:
            pytest.fail(f"{base} was not ready within {timeout}s")
        await asyncio.sleep(0.05)


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


async def exchange(
    port: int, method: str, path: str, headers: Headers = (), body: bytes = b""
) -> RawResponse:
    """One request on a fresh connection (`Connection: close`), read to the server's EOF."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in _pairs(headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {data[:200]!r}"
    status_line, *fields = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    parsed: CIMultiDict[str] = CIMultiDict()
    for field in fields:
        name, _, value = field.partition(":")
        parsed.add(name.strip(), value.strip())
    return RawResponse(int(status), parsed, rest)


@dataclass(frozen=True)
class CurlResult:
    returncode: int
    stderr: str
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def curl(directory: Path, url: str, *args: str) -> CurlResult:
    """Run curl with `args`; the last response's head and (decoded, if asked) body."""
    binary = require_command("curl", "curl")
    head_file, body_file = directory / "curl-head.txt", directory / "curl-body.bin"
    head_file.unlink(missing_ok=True)
    body_file.unlink(missing_ok=True)
    process = await asyncio.create_subprocess_exec(
        binary, "--silent", "--show-error", "--max-time", "20",
        "--dump-header", str(head_file), "--output", str(body_file), *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    head = head_file.read_bytes().decode("latin-1") if head_file.exists() else ""
    blocks = [block for block in head.split("\r\n\r\n") if block.strip()]
    status, headers = 0, CIMultiDict[str]()
    if blocks:
        status_line, *fields = blocks[-1].split("\r\n")
        status = int(status_line.split(" ")[1])
        for field in fields:
            name, _, value = field.partition(":")
            headers.add(name.strip(), value.strip())
    body = body_file.read_bytes() if body_file.exists() else b""
    return CurlResult(process.returncode, stderr.decode(), status, headers, body)


@dataclass
class SocketResponse:
    status: int
    reason: str
    version: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    interim: list[int] = dataclasses.field(default_factory=list)  # 1xx answers seen before this one


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

    def response(self, final: bool = True) -> SocketResponse:
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
            return SocketResponse(int(status), " ".join(reason), version, headers, body, interim)


def send_bytes(port: int, data: bytes) -> SocketResponse:
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
