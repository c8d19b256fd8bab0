"""Slow clients, by Debian's slowhttptest, against one process with a file limit of 256.

slow headers (slowloris), slow bodies (R-U-Dead-Yet) and slow reads each open hundreds of
connections that send or read a few bytes at a time. Meanwhile a probe client asks for
/health/live and GET /users?limit=1 every 0.2 s: every answer must be a 200 within a
second. Before the connection cap and the header timeout, 233 slow-header connections
made the liveness probe refuse connections for 13 s (the file limit reached).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.service import Service, running_service
from tests.helpers.tools import require_command

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

ATTACK_SECONDS = 12
FILE_LIMIT = 256
PROBE_TIMEOUT = 1.0
MODES = {
    "slow headers": ["-H", "-i", "2", "-x", "24", "-u", "{base}/users"],
    "slow body": ["-B", "-i", "2", "-s", "8192", "-x", "24", "-f", "application/json",
                  "-u", "{base}/users"],
    "slow read": ["-X", "-k", "4", "-n", "1", "-w", "16", "-y", "64", "-z", "32",
                  "-u", "{base}/openapi.json"],
}  # fmt: skip


@pytest.fixture
def limited_service(test_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """python -m service (one process) under `prlimit --nofile=256`, default bounds."""
    prlimit = require_command("prlimit", "util-linux")
    require_command("slowhttptest", "slowhttptest")
    env = {**test_env, "LOG_LEVEL": "WARNING"}
    prefix = [prlimit, f"--nofile={FILE_LIMIT}:{FILE_LIMIT}", "--"]
    with running_service("python -m service", env, tmp_path / "service.log", prefix) as service:
        yield service


@dataclass
class Probe:
    """Asks every 0.2 s until stopped; counts what did not answer 200 within a second."""

    base: str
    pid: int
    asked: int = 0
    most_files: int = 0  # the service's open file descriptors, at most
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        fds = Path(f"/proc/{self.pid}/fd")
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.most_files = max(self.most_files, len(list(fds.iterdir())))
            for path in ("/health/live", "/users?limit=1"):
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


@pytest.mark.parametrize("mode", MODES)
def test_probes_keep_answering_while_slowhttptest_attacks(
    limited_service: Service, mode: str, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{limited_service.port}"
    args = [arg.format(base=base) for arg in MODES[mode]]
    command = ["slowhttptest", *args, "-c", "400", "-r", "200", "-l", str(ATTACK_SECONDS),
               "-p", "3"]  # fmt: skip
    probe = Probe(base, limited_service.process.pid)
    thread = threading.Thread(target=probe.run)
    thread.start()
    try:
        attack = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=ATTACK_SECONDS + 30,
            check=False,
            cwd=tmp_path,
        )
    finally:
        probe.stop()
        thread.join()
    output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", attack.stdout + attack.stderr)
    assert attack.returncode == 0, output[-2000:]
    # It ran to its time limit, or ended early because the server closed all it opened.
    assert re.search(r"Exit status: (Hit test time limit|No open connections left)", output), (
        output[-2000:]
    )
    assert not re.search(r"service available:\s+NO", output), output[-2000:]
    assert probe.asked >= 20
    # The cap kept the process below its file limit (at it, accept() fails: EMFILE).
    assert 0 < probe.most_files < FILE_LIMIT - 16, probe.most_files
    assert probe.failures == [], f"{len(probe.failures)} of {probe.asked}: {probe.failures[:5]}"
    assert limited_service.process.poll() is None  # the process is still serving
    log = limited_service.log()
    assert "Traceback" not in log, log[-3000:]
