"""`make bench`: the service against a bare aiohttp baseline, in one run, on this machine.

Starts SecantusDB and redis-server on free ports, seeds 10,000 users with 5 orders each,
then for 1 and 2 gunicorn workers runs every scenario with identical wrk load (a warm-up,
then a timed window) and reports requests/s, p50/p99, errors and peak RSS per worker, with
each figure's ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from service.seed import seed_id
from tests.servers import MongoServer, RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
USERS, ORDERS_PER_USER, HOT_SET = 10_000, 5, 100
TOKEN = "bench-write-token-0123456789"  # noqa: S105 - a throwaway token for a local run


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    cache: str | None  # None: the baseline app
    hot: int = 0
    write_percent: int = 0


SCENARIOS = (
    Scenario("baseline", "bare aiohttp, fixed body of the same size", None, hot=HOT_SET),
    Scenario("hit-memory", "GET /users/{id}, 100 hot ids, memory cache", "memory", hot=HOT_SET),
    Scenario("hit-redis", "GET /users/{id}, 100 hot ids, Redis cache", "redis", hot=HOT_SET),
    Scenario("miss", "GET /users/{id}, 10,000 ids, no cache (MongoDB every time)", "none"),
    Scenario(
        "writes", "POST /users/{id}/orders, 10,000 ids, Redis cache", "redis", write_percent=100
    ),
    Scenario(
        "mixed",
        "90% GET (100 hot ids) / 10% POST orders, Redis cache",
        "redis",
        hot=HOT_SET,
        write_percent=10,
    ),
)
# Issue #8's targets, for 1 worker: minimum throughput ratios and the p99 bound.
TARGETS = {"hit-memory": 0.75, "hit-redis": 0.45}
P99_LIMIT, RSS_LIMIT_MB = 3.0, 80.0


@dataclass
class Result:
    scenario: str
    workers: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_rss_mb: float
    ratio: float | None = None
    p99_ratio: float | None = None


def _service_env(
    scenario: Scenario, mongo: MongoServer, redis: RedisServer, port: int, workers: int
) -> dict[str, str]:
    """The production configuration (JSON access logs, tokens, Redis), on local servers."""
    env = {
        **os.environ,
        "SERVICE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "MONGO_URL": mongo.url,
        "MONGO_DB": "bench",
        "REDIS_URL": redis.url,
        "CACHE_BACKEND": scenario.cache or "none",
        "API_TOKENS": TOKEN,
        "SHUTDOWN_DRAIN_SECONDS": "0",
        "METRICS_PORT": str(free_port()),  # production serves /metrics on its own port
    }
    if scenario.cache == "memory" and workers > 1:
        env["CACHE_MEMORY_ACROSS_WORKERS"] = "true"  # reads only: no staleness to accept
    return env


def _start(
    scenario: Scenario, workers: int, port: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    if scenario.cache is None:
        command = [
            str(BIN / "gunicorn"),
            # Its own config module: otherwise gunicorn would read the service's gunicorn.conf.py.
            "--config",
            "python:bench.baseline_app",
            "bench.baseline_app:create_app()",
            "--worker-class",
            "aiohttp.GunicornUVLoopWebWorker",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--keep-alive",
            "75",
            "--log-level",
            "warning",
        ]
    else:
        command = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, timeout=60, process=process)
    url = f"http://127.0.0.1:{port}/users/{seed_id('user', 0)}"
    for _ in range(200):  # until the app (not just the socket) answers
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _workers_of(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def _peak_rss_mb(pids: list[int]) -> float:
    peaks = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if match:
            peaks.append(int(match.group(1)) / 1024)
    return max(peaks, default=0.0)


def _wrk(
    port: int, seconds: float, scenario: Scenario, ids_file: Path, connections: int
) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_LUA_DIR": str(BENCH / "lua"),
        "BENCH_IDS": str(ids_file),
        "BENCH_HOT": str(scenario.hot),
        "BENCH_WRITE_PERCENT": str(scenario.write_percent),
        "BENCH_TOKEN": TOKEN,
    }
    command = [
        "wrk",
        "--threads",
        "2",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--script",
        str(BENCH / "lua" / "scenario.lua"),
        f"http://127.0.0.1:{port}",
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data["errors"].values())
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": errors,
    }


def _run(
    scenario: Scenario,
    workers: int,
    mongo: MongoServer,
    redis: RedisServer,
    args: argparse.Namespace,
    ids_file: Path,
    body_bytes: int,
    log: Path,
) -> Result:
    port = free_port()
    env = _service_env(scenario, mongo, redis, port, workers)
    env["BODY_BYTES"] = str(body_bytes)
    process = _start(scenario, workers, port, env, log)
    try:
        _wrk(port, args.warmup, scenario, ids_file, args.connections)
        measured = _wrk(port, args.duration, scenario, ids_file, args.connections)
        rss = _peak_rss_mb(_workers_of(process.pid))
    finally:
        _stop(process)
    return Result(
        scenario.name,
        workers,
        round(measured["rps"], 1),
        round(measured["p50_ms"], 2),
        round(measured["p99_ms"], 2),
        int(measured["errors"]),
        round(rss, 1),
    )


def _typical_body_bytes(mongo: MongoServer, redis: RedisServer, log: Path) -> int:
    scenario = SCENARIOS[3]
    port = free_port()
    process = _start(scenario, 1, port, _service_env(scenario, mongo, redis, port, 1), log)
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/users/{seed_id('user', 42)}"
        ) as reply:
            return len(reply.read())
    finally:
        _stop(process)


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} x {model}, Python {platform.python_version()}, {platform.system()}"


def _verdicts(result: Result) -> list[str]:
    if result.workers != 1 or result.scenario == "baseline":
        return []
    notes = []
    target = TARGETS.get(result.scenario)
    if target is not None and result.ratio is not None:
        notes.append(f"{'PASS' if result.ratio >= target else 'MISS'} >={target}x")
    if result.p99_ratio is not None and result.scenario in TARGETS:
        notes.append(f"p99 {'PASS' if result.p99_ratio <= P99_LIMIT else 'MISS'}")
    notes.append("0 errors" if result.errors == 0 else "ERRORS")
    notes.append(f"RSS {'PASS' if result.peak_rss_mb < RSS_LIMIT_MB else 'MISS'}")
    return notes


def table(results: list[Result], machine: str, settings: str) -> str:
    lines = [
        f"Machine: {machine}. Load: {settings}.",
        "",
        "| Scenario | Workers | Requests/s | x baseline | p50 ms | p99 ms | p99 x baseline "
        "| Errors | Peak RSS/worker MB | Targets (1 worker) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = "1.00" if r.scenario == "baseline" else f"{r.ratio:.2f}"
        p99_ratio = "1.00" if r.scenario == "baseline" else f"{r.p99_ratio:.2f}"
        verdicts = ", ".join(_verdicts(r))
        lines.append(
            f"| {r.scenario} | {r.workers} | {r.requests_per_second:,.0f} | {ratio} | {r.p50_ms} "
            f"| {r.p99_ms} | {p99_ratio} | {r.errors} | {r.peak_rss_mb} | {verdicts} |"
        )
    return "\n".join(lines)


def _update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    before, _, rest = content.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="timed window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up, seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (Debian: sudo apt-get install wrk)", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    if chosen[0].name != "baseline":
        chosen.insert(0, SCENARIOS[0])  # ratios need the baseline of the same run
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="user-service-bench-") as temp:
        directory = Path(temp)
        log = directory / "servers.log"
        mongo, redis = MongoServer(directory / "mongo"), RedisServer(directory / "redis")
        mongo.start()
        redis.start()
        try:
            env = {**os.environ, "SERVICE_ENV": "test", "MONGO_URL": mongo.url, "MONGO_DB": "bench"}
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "seed",
                    "--users",
                    str(USERS),
                    "--orders-per-user",
                    str(ORDERS_PER_USER),
                ],
                env=env,
                check=True,
                cwd=ROOT,
            )
            ids_file = directory / "ids.txt"
            ids_file.write_text("\n".join(seed_id("user", i) for i in range(USERS)) + "\n")
            body_bytes = _typical_body_bytes(mongo, redis, log)
            results: list[Result] = []
            for workers in (int(w) for w in args.workers.split(",")):
                baseline: Result | None = None
                for scenario in chosen:
                    print(f"bench: {scenario.name} with {workers} worker(s)...", flush=True)
                    result = _run(scenario, workers, mongo, redis, args, ids_file, body_bytes, log)
                    if scenario.name == "baseline":
                        baseline = result
                    elif baseline is not None:
                        result.ratio = round(
                            result.requests_per_second / baseline.requests_per_second, 2
                        )
                        result.p99_ratio = round(result.p99_ms / baseline.p99_ms, 2)
                    results.append(result)
        finally:
            redis.stop()
            mongo.stop()
    machine = _machine()
    settings = (
        f"wrk, 2 threads, {args.connections} connections, {args.warmup:g} s warm-up, "
        f"{args.duration:g} s window; response body {body_bytes} bytes"
    )
    text = table(results, machine, settings)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "load": settings,
                "seconds": round(time.monotonic() - started),
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(text)
    print(f"\nbench: {round(time.monotonic() - started)} s; results in bench/results/latest.json")
    if args.update_readme:
        _update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
