"""`make bench`: the service against a bare aiohttp baseline, in one run, on this machine.

Starts SecantusDB and redis-server on free ports, seeds 10,000 users with 5 orders each,
then for 1 and 2 gunicorn workers runs every scenario with identical wrk load (a warm-up,
then a timed window) and reports requests/s, p50/p99, errors and peak RSS per worker, with
each figure's ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass

from bench.harness import (
    BIN,
    HOT_SET,
    ROOT,
    Stack,
    cpu_seconds,
    machine,
    memory_mb,
    publish,
    service_env,
    stack,
    start_gunicorn,
    start_service,
    stop,
    worker_pids,
    wrk,
)
from service.seed import seed_id
from tests.servers import free_port


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    cache: str | None  # None: the baseline app
    hot: int = 0
    write_percent: int = 0
    per_driver: bool = False  # the database's work dominates: run it once per driver


SCENARIOS = (
    Scenario("baseline", "bare aiohttp, fixed body of the same size", None, hot=HOT_SET),
    Scenario("hit-memory", "GET /users/{id}, 100 hot ids, memory cache", "memory", hot=HOT_SET),
    Scenario("hit-redis", "GET /users/{id}, 100 hot ids, Redis cache", "redis", hot=HOT_SET),
    Scenario(
        "miss",
        "GET /users/{id}, 10,000 ids, no cache (MongoDB every time)",
        "none",
        per_driver=True,
    ),
    Scenario(
        "writes",
        "POST /users/{id}/orders, 10,000 ids, Redis cache",
        "redis",
        write_percent=100,
        per_driver=True,
    ),
    Scenario(
        "mixed",
        "90% GET (100 hot ids) / 10% POST orders, Redis cache",
        "redis",
        hot=HOT_SET,
        write_percent=10,
        per_driver=True,
    ),
)
DRIVERS = ("motor", "pymongo")
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
    driver: str = "motor"
    # User + system CPU of the target's processes (master and workers) in the timed window,
    # divided by the requests answered in it: far steadier than req/s on a shared machine.
    cpu_us_per_request: float = 0.0


def _start_baseline(
    stack: Stack, workers: int, body_bytes: int
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
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
    env = {**service_env(stack, "none", port, workers), "BODY_BYTES": str(body_bytes)}
    return port, start_gunicorn(command, env, port, stack.log)


def _run(
    scenario: Scenario,
    workers: int,
    stack: Stack,
    args: argparse.Namespace,
    body_bytes: int,
    driver: str = "motor",
) -> Result:
    if scenario.cache is None:
        port, process = _start_baseline(stack, workers, body_bytes)
    else:
        port, process = start_service(stack, scenario.cache, workers, MONGO_DRIVER=driver)
    load = {
        "connections": args.connections,
        "hot": scenario.hot,
        "write_percent": scenario.write_percent,
    }
    try:
        wrk(port, args.warmup, stack.ids_file, **load)
        pids = [process.pid, *worker_pids(process.pid)]
        cpu_before = cpu_seconds(pids)
        measured = wrk(port, args.duration, stack.ids_file, **load)
        cpu = cpu_seconds(pids) - cpu_before
        requests = measured["rps"] * args.duration
        rss = memory_mb(worker_pids(process.pid))
    finally:
        stop(process)
    return Result(
        scenario.name,
        workers,
        round(measured["rps"], 1),
        round(measured["p50_ms"], 2),
        round(measured["p99_ms"], 2),
        int(measured["errors"]),
        round(rss, 1),
        driver=driver,
        cpu_us_per_request=round(cpu * 1e6 / requests, 1) if requests else 0.0,
    )


def _typical_body_bytes(stack: Stack) -> int:
    """The size of a seeded user's aggregate: the baseline answers with this many bytes."""
    port, process = start_service(stack, "none", 1)
    try:
        url = f"http://127.0.0.1:{port}/users/{seed_id('user', 42)}"
        with urllib.request.urlopen(url) as reply:
            return len(reply.read())
    finally:
        stop(process)


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


_PER_DRIVER = {s.name for s in SCENARIOS if s.per_driver}


def table(results: list[Result], machine: str, settings: str) -> str:
    lines = [
        f"Machine: {machine}. Load: {settings}.",
        "",
        "| Scenario | Workers | Requests/s | x baseline | CPU µs/request | p50 ms | p99 ms "
        "| p99 x baseline | Errors | Peak RSS/worker MB | Targets (1 worker) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = "1.00" if r.scenario == "baseline" else f"{r.ratio:.2f}"
        p99_ratio = "1.00" if r.scenario == "baseline" else f"{r.p99_ratio:.2f}"
        verdicts = ", ".join(_verdicts(r))
        name = f"{r.scenario} ({r.driver})" if r.scenario in _PER_DRIVER else r.scenario
        lines.append(
            f"| {name} | {r.workers} | {r.requests_per_second:,.0f} | {ratio} "
            f"| {r.cpu_us_per_request:,.0f} | {r.p50_ms} "
            f"| {r.p99_ms} | {p99_ratio} | {r.errors} | {r.peak_rss_mb} | {verdicts} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="timed window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up, seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument(
        "--drivers", default=",".join(DRIVERS), help="drivers for miss, writes and mixed"
    )
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    if not chosen or chosen[0].name != "baseline":
        chosen.insert(0, SCENARIOS[0])  # ratios need the baseline of the same run
    started = time.monotonic()
    results: list[Result] = []
    with stack("user-service-bench-") as servers:
        body_bytes = _typical_body_bytes(servers)
        for workers in (int(w) for w in args.workers.split(",")):
            baseline: Result | None = None
            runs = [
                (scenario, driver)
                for scenario in chosen
                for driver in (args.drivers.split(",") if scenario.per_driver else ["motor"])
            ]
            for scenario, driver in runs:
                print(f"bench: {scenario.name} ({driver}) with {workers} worker(s)...", flush=True)
                result = _run(scenario, workers, servers, args, body_bytes, driver)
                if scenario.name == "baseline":
                    baseline = result
                elif baseline is not None:
                    result.ratio = round(
                        result.requests_per_second / baseline.requests_per_second, 2
                    )
                    result.p99_ratio = round(result.p99_ms / baseline.p99_ms, 2)
                results.append(result)
    settings = (
        f"wrk, 2 threads, {args.connections} connections, {args.warmup:g} s warm-up, "
        f"{args.duration:g} s window; response body {body_bytes} bytes"
    )
    text = table(results, machine(), settings)
    seconds = round(time.monotonic() - started)
    data = {
        "machine": machine(),
        "load": settings,
        "seconds": seconds,
        "results": [asdict(r) for r in results],
    }
    path = publish("bench", data, text, readme=args.update_readme)
    print(f"\nbench: {seconds} s; results in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
