"""A network namespace of a test's own (`ip netns`), with a DNS server of its own (dnsmasq).

Inside, 127.0.0.1 is the namespace's own loopback, and `ip netns exec` bind-mounts
/etc/netns/NAME/resolv.conf over /etc/resolv.conf for each command it runs (ip-netns(8)):
what runs there asks this dnsmasq, and nothing else does. The host's network and resolver
are untouched; /etc/netns/NAME goes with the namespace. Needs root (CI runs as root) and
dnsmasq (Debian's dnsmasq-base: the binary alone, no system service).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.servers import terminate
from tests.helpers.tools import in_ci, require_command

_WAIT_FOR_PORT = (
    "import sys; from tests.helpers.servers import wait_for_port; "
    "wait_for_port(int(sys.argv[1]), timeout=float(sys.argv[2]))"
)


class Namespace:
    """Commands run inside the namespace; every process spawned here is stopped with it."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def spawn(
        self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside, from the checkout, its output appended to `log_path`."""
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                self.command(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run Python code inside (the tests package importable); its stdout, or an
        AssertionError with its output when it fails."""
        result = subprocess.run(
            self.command([sys.executable, "-c", code, *args]),
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        self.python(_WAIT_FOR_PORT, str(port), str(timeout), timeout=timeout + 30)

    def start_dns(self, records: Sequence[str]) -> subprocess.Popen[bytes]:
        """dnsmasq on the namespace's 127.0.0.1:53, answering only from `records`
        (dnsmasq options such as --srv-host=, --txt-record=, --host-record=)."""
        log_path = self.directory / "dnsmasq.log"
        process = self.spawn(
            [require_command("dnsmasq", "dnsmasq-base"), "--keep-in-foreground",
             "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
             "--port=53", "--user=root", f"--pid-file={self.directory / 'dnsmasq.pid'}",
             "--log-queries",
             f"--log-facility={log_path}", *records],
            self.directory / "dnsmasq.out",
        )  # fmt: skip
        # dnsmasq logs "started" once its sockets are bound.
        deadline = time.monotonic() + 10
        while "started" not in (log_path.read_text() if log_path.exists() else ""):
            assert process.poll() is None, (self.directory / "dnsmasq.out").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start within 10 s"
            time.sleep(0.02)
        return process


def _refuse(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI must not skip it)")
    pytest.skip(message)


@contextmanager
def network_namespace(directory: Path) -> Iterator[Namespace]:
    """A fresh namespace with its loopback up and a resolv.conf naming 127.0.0.1, until
    the block ends; then its processes are stopped and it is deleted."""
    if os.geteuid() != 0:
        _refuse("network namespaces need root")
    require_command("ip", "iproute2")
    require_command("dnsmasq", "dnsmasq-base")
    name = f"user-service-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc/netns") / name
    directory.mkdir(parents=True, exist_ok=True)
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        _refuse(f"cannot create a network namespace: {added.stderr.strip()}")
    namespace = Namespace(name, directory)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        subprocess.run(namespace.command(["ip", "link", "set", "lo", "up"]), check=True)
        yield namespace
    finally:
        for process in reversed(namespace.processes):
            if process.poll() is None:
                terminate(process)
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)
