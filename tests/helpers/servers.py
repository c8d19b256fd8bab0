"""Real servers for tests and benchmarks: SecantusDB and redis-server as child processes.

Each runs on a free loopback port with its data in a temporary directory, and can be
stopped and started again on the same port and data, which the fault tests rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers (a hung database); yields
    the port. No task per connection: a cancelled handler task is logged by asyncio on 3.11."""
    connections: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(
        lambda reader, writer: connections.append(writer), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in connections:
            writer.close()
        await server.wait_closed()


def terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerProcess:
    """A server child process that can be stopped and restarted on the same port."""

    name = "server"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.directory / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
        )
        log.close()
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class MongoServer(ServerProcess):
    """SecantusDB, a MongoDB wire-protocol server, with fail points enabled for fault tests."""

    name = "secantusd"

    def command(self) -> list[str]:
        executable = VENV_BIN / "secantusd-py"
        return [
            str(executable if executable.exists() else "secantusd-py"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", str(self.directory / "data"),
            "--log-level", "WARNING",
            "--enable-test-commands",
            "--cache-size", "256M",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        # One node: a direct connection keeps the driver pointed at it across restarts
        # (discovering it as a replica set, the driver dropped it while it shut down).
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer(ServerProcess):
    name = "redis"

    def command(self) -> list[str]:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        return [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            # DEBUG SLEEP lets fault tests stall the server like an overloaded Redis.
            "--enable-debug-command", "local",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
