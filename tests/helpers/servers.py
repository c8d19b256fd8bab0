"""Real servers for tests and benchmarks: SecantusDB, redis-server and the service itself
(`python -m service` or gunicorn) as child processes.

Each runs on a free loopback port with its data in a temporary directory, and can be
stopped and started again on the same port and data, which the fault tests rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ROOT

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


class ServiceProcess(ServerProcess):
    """`python -m service` itself, for clients that need a real port (a browser, a client)."""

    name = "service"

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__(directory)
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "service"]

    def start(self) -> None:
        self.process = spawn_service("python -m service", self.env, self.directory / "service.log")
        wait_for_port(self.port, process=self.process)
        # Ready (indexes made), so the first request does not race index creation.
        wait_answered(f"{self.url}/health/ready", timeout=30, process=self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def service_command(kind: str, prefix: Sequence[str] = ()) -> list[str]:
    """gunicorn with the repository's gunicorn.conf.py, or (any other kind) python -m service."""
    if kind == "gunicorn":
        return [*prefix, str(VENV_BIN / "gunicorn"), "--config", "gunicorn.conf.py"]
    return [*prefix, sys.executable, "-m", "service"]


def spawn_service(
    kind: str, env: dict[str, str], log_path: Path, prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start the service from the checkout with exactly `env`, its output appended to
    `log_path`; not waited for: the caller chooses what "up" means and how it stops."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            service_command(kind, prefix), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_answered(
    url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until `url` answers 200 (each try on a fresh connection); a dead `process` stops it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before {url} answered 200")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} never answered 200 within {timeout}s")


def worker_pids(master: int) -> list[int]:
    """gunicorn's workers: the master's child processes (none once it has gone)."""
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


@dataclass
class Service:
    """A running service child process, with what connection-level tests read back."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as r:  # noqa: S310
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


@contextmanager
def running_service(
    kind: str,
    env: dict[str, str],
    log_path: Path,
    prefix: Sequence[str] = (),
) -> Iterator[Service]:
    """The service on a free port, answering /health/live, until the block ends; then
    SIGTERM (SIGKILL after 15 s). `env` goes over the process environment and
    WEB_CONCURRENCY=1."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "1", **env}
    process = spawn_service(kind, full_env, log_path, prefix)
    try:
        wait_for_port(port, timeout=30, process=process)
        service = Service(process, port, log_path)
        wait_answered(f"{service.base}/health/live", timeout=30)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def two_gunicorn_workers(
    env: dict[str, str], redis: RedisServer, directory: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """gunicorn with two workers sharing `redis`, metrics files and log in `directory`
    (`env` overrides these defaults); yields its base URL and master once it listens."""
    port = free_port()
    env = {**os.environ, "WEB_CONCURRENCY": "2", "CACHE_BACKEND": "redis",
           "REDIS_URL": redis.url, "METRICS_DIR": str(directory / "metrics"),
           "SHUTDOWN_DRAIN_SECONDS": "0.5", **env, "PORT": str(port)}  # fmt: skip
    process = spawn_service("gunicorn", env, directory / "gunicorn.log")
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_service(
    env: dict[str, str], *args: str, kind: str = "python -m service", timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command of the service to its end (`args` after `python -m service`, e.g.
    `seed`), from the checkout with exactly `env`; output captured as text, exit not checked."""
    return subprocess.run(
        [*service_command(kind), *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
