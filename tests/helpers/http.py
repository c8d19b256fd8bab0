"""Real HTTP clients for protocol tests: a raw socket (bytes as sent) and curl.

aiohttp's test client reads what aiohttp writes with aiohttp's own parser, so it cannot tell
whether a HEAD answer carried a body, or which headers arrived twice. These read the bytes.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from multidict import CIMultiDict

from tests.servers import in_ci

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


def require_curl() -> str:
    binary = shutil.which("curl")
    if binary is None:
        message = "curl is not installed: `sudo apt-get install curl`"
        if in_ci():
            pytest.fail(f"{message} (CI must not skip it)")
        pytest.skip(message)
    return binary


@dataclass(frozen=True)
class CurlResult:
    returncode: int
    stderr: str
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def curl(directory: Path, url: str, *args: str) -> CurlResult:
    """Run curl with `args`; the last response's head and (decoded, if asked) body."""
    binary = require_curl()
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
