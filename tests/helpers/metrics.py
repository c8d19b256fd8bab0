"""Reading the service's metrics as Prometheus does: the text format parsed, the workers
behind a gunicorn scrape, and a real Prometheus server with its query API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.app import Client
from tests.helpers.servers import ServerProcess
from tests.helpers.service import worker_pids
from tests.helpers.tools import require_command

Sample = tuple[str, dict[str, str], float]  # name, labels, value
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")


def parse(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or ""))
        samples.append((match.group("name"), labels, float(match.group("value"))))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        value for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )  # fmt: skip


async def scrape(client: Client) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return parse(await response.text())


async def both_workers_published(http: aiohttp.ClientSession, base: str) -> set[str]:
    """Wait until a scrape shows two workers' process gauges: both have booted."""
    deadline = time.monotonic() + 20
    pids: set[str] = set()
    while len(pids) < 2:
        assert time.monotonic() < deadline, pids
        async with http.get(f"{base}/metrics") as scrape:
            assert scrape.status == 200
            samples = parse(await scrape.text())
        pids = {s[1]["pid"] for s in samples if s[0] == "process_start_time_seconds"}
        await asyncio.sleep(0.1)
    return pids


async def replace_a_worker(master: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGKILL one worker and wait for gunicorn to start another in its place."""
    victim = worker_pids(master.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while victim in worker_pids(master.pid) or len(worker_pids(master.pid)) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        await asyncio.sleep(0.2)
    return victim


class PrometheusServer(ServerProcess):
    """A real Prometheus scraping `targets` every second, its storage in `directory`."""

    name = "prometheus"

    def __init__(self, directory: Path, targets: list[str]) -> None:
        super().__init__(directory)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "user-service", "static_configs": [{"targets": targets}]}
            ],
        }
        self.config = directory / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML

    def command(self) -> list[str]:
        return [
            require_command("prometheus", "prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PrometheusApi:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self.get("/api/v1/query", query=expr))["result"]
        return result

    async def totals(self) -> dict[tuple[str, str], float]:
        result = await self.query("sum by (route, status) (http_requests_total)")
        return {(r["metric"]["route"], r["metric"]["status"]): float(r["value"][1]) for r in result}

    async def ready(self) -> bool:
        async with self.http.get(f"{self.url}/-/ready") as response:
            return response.status == 200
