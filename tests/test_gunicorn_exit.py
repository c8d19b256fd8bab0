"""Plain gunicorn (2 workers, the production worker class) stopped with SIGTERM: exit 0, and
a log an operator can read on every rollout without finding an "error" that is not one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers.servers import MongoServer, free_port, wait_for_port
from tests.helpers.service import spawn_service, wait_answered


def _wait_for_two_workers(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until a scrape shows both workers' process gauges: both have booted and serve."""
    deadline = time.monotonic() + 30
    pids: set[str] = set()
    while len(pids) < 2:
        assert process.poll() is None, "gunicorn exited before both workers served"
        assert time.monotonic() < deadline, pids
        with urllib.request.urlopen(url, timeout=5) as scrape:  # noqa: S310 - http
            text = scrape.read().decode()
        pids = set(re.findall(r'^process_start_time_seconds\{[^}]*pid="(\d+)"', text, re.M))
        time.sleep(0.1)


def test_sigterm_closes_each_listening_socket_once(
    mongo_server: MongoServer, test_env: dict[str, str], tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        **test_env,
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
        "SHUTDOWN_DRAIN_SECONDS": "0.2",
        "GRACEFUL_TIMEOUT_SECONDS": "2",
        "HOME": str(home),  # where gunicorn's control socket would go
    }
    log_path = tmp_path / "gunicorn.log"
    process = spawn_service("gunicorn", env, log_path)
    try:
        wait_for_port(port, process=process)
        # Both workers have bound the metrics port (SO_REUSEPORT) once each answers.
        wait_answered(f"http://127.0.0.1:{port}/health/live", timeout=60, process=process)
        wait_answered(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60, process=process)
        _wait_for_two_workers(f"http://127.0.0.1:{metrics_port}/metrics", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text(errors="replace")
    assert text.count("Booting worker") == 2, text
    assert text.count("Worker exiting") == 2, text
    assert "Bad file descriptor" not in text, text
    assert "Error while closing socket" not in text, text
    assert "Control socket listening" not in text, text
    assert "Control server error" not in text, text
    assert not home.exists()
    assert "Traceback" not in text, text
