"""The shipped front (config/haproxy/haproxy.cfg) as a child process, before one instance or
several, on a free loopback port; stopped by its pid.

One instance is the file as deployed: `FRONT_BIND` and `BACKEND` in the environment. Several
(or a stats page) take a second `-f` file that gives the `backend service` the main file
leaves out when `BACKEND` is unset; it inherits the main file's defaults (timeouts, retries,
health checks, per-server maxconn), so every run tests the shipped settings.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.servers import free_port, terminate, wait_for_port

FRONT_CONFIG = ROOT / "config" / "haproxy" / "haproxy.cfg"


class Front:
    """HAProxy in the foreground (`-db`) with the shipped config, its log in `directory`.

    `servers` maps a server name to an instance's port on 127.0.0.1; `stats_port` adds a
    stats page (`/stats`, with `;csv`) for a harness that watches the servers' states.
    """

    def __init__(
        self, directory: Path, servers: Mapping[str, int], stats_port: int | None = None
    ) -> None:
        self.port = free_port()
        self.log = directory / "haproxy.log"
        self.files = [FRONT_CONFIG]
        self.env = {**os.environ, "FRONT_BIND": f"127.0.0.1:{self.port}"}
        self.env.pop("BACKEND", None)
        self.process: subprocess.Popen[bytes] | None = None
        if len(servers) == 1 and stats_port is None:
            (port,) = servers.values()
            self.env["BACKEND"] = f"127.0.0.1:{port}"
            return
        lines = ["backend service"]
        lines += [f"    server {name} 127.0.0.1:{port}" for name, port in servers.items()]
        if stats_port is not None:
            lines += ["listen stats", f"    bind 127.0.0.1:{stats_port}", "    stats enable",
                      "    stats uri /stats", "    stats refresh 1s",
                      "    stats admin if TRUE"]  # fmt: skip
        extra = directory / "haproxy-backend.cfg"
        extra.write_text("\n".join(lines) + "\n")
        self.files.append(extra)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, binary: str, *flags: str) -> list[str]:
        return [binary, *flags, *(arg for path in self.files for arg in ("-f", str(path)))]

    def start(self, binary: str) -> None:
        """Check the configuration (its errors in the assertion), then run it until stop()."""
        checked = subprocess.run(self.command(binary, "-c"), env=self.env, capture_output=True,
                                 check=False, timeout=30)  # fmt: skip
        assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(binary, "-db"), env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
