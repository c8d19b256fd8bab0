"""The service itself as a child process: `python -m service` or gunicorn, started from the
checkout with the environment a test chooses, on a free port, stopped by its own pid.

Connection behaviour (keep-alive, timeouts, worker restarts, signals) is the server's, not
the app's, so these tests cannot use aiohttp's in-process test server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.servers import VENV_BIN, RedisServer, ServerProcess, free_port, wait_for_port


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
