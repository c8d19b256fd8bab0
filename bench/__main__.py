"""`make bench`: the service beside bare aiohttp, the plain app and two driver floors, in rounds.

Starts SecantusDB and redis-server on free ports and seeds 10,000 users with 5 orders each.
Then, round after round, runs every target once with identical wrk load (a warm-up, then a
timed window): bare aiohttp, the plain app (the service's packages used plainly, for hits
and for misses), the service's scenarios, and the floors (bare aiohttp doing the service's
two queries with Motor, then with PyMongo's async client). Each run reports
requests/s, p50/p99, errors, peak RSS per worker and CPU µs per request; the table shows
each figure's median over the rounds and its spread, and judges the targets (bench/targets.py)
on the medians. With --before PATH, an earlier checkout's service runs beside this one's in
the same rounds. Also writes the capacity model and bench/results/bench.png. The method:
bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import capacity, chart, targets
from bench.harness import (
    BIN,
    HOT_SET,
    RESULTS,
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
    update_readme,
    wrk,
)
from bench.summary import Result, Row, Spread, before_label, summarise
from service.seed import seed_id
from service.settings.loading import load_settings
from tests.helpers.otlp import OtlpReceiver, otlp_receiver
from tests.helpers.servers import free_port
from tests.helpers.service import worker_pids


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    target: str  # "baseline", "plain", "floor" (bench/ apps) or "service"
    cache: str = "none"  # the plain app: "memory" reads its cache, "none" the database
    hot: int = 0
    write_percent: int = 0
    per_driver: bool = False  # run once per driver (implies database)
    hot_from: int = 0  # the hot set starts after this many ids
    database: bool = False  # the database's work dominates: settle after warm-up, count statuses
    traced: bool = False  # tracing on: every request sampled, exported to the bench's sink

    @property
    def database_bound(self) -> bool:
        return self.database or self.per_driver


# In the order a round runs them. The floors sit beside the misses they judge, and the
# writes come last: each round's writes add orders that the next round's reads return,
# to floors and misses alike. The mixed load writes to a hot set of its own: writing to the
# hits' ids grew their bodies round after round (5 orders in the first, dozens by the
# third), while the baseline's body stayed the size of the first.
SCENARIOS = (
    Scenario("baseline", "bare aiohttp, fixed body of the same size", "baseline", hot=HOT_SET),
    Scenario(
        "plain",
        "the card's packages used plainly, aiocache get, same body (bench/plain_app.py)",
        "plain",
        "memory",
        HOT_SET,
    ),
    Scenario(
        "hit-memory", "GET /users/{id}, 100 hot ids, memory cache", "service", "memory", HOT_SET
    ),
    Scenario("hit-redis", "GET /users/{id}, 100 hot ids, Redis cache", "service", "redis", HOT_SET),
    Scenario(
        "hit-sentinel",
        "GET /users/{id}, 100 hot ids, the same Redis found through Sentinel",
        "service",
        "sentinel",
        HOT_SET,
    ),
    Scenario(
        "hit-redis-traced",
        "hit-redis with tracing on: every request sampled, OTLP/HTTP to a sink",
        "service",
        "redis",
        HOT_SET,
        traced=True,
    ),
    Scenario(
        "floor",
        "bare aiohttp reading user and orders with asyncio.gather (bench/floor_app.py)",
        "floor",
        per_driver=True,
    ),
    Scenario(
        "plain-miss",
        "the plain app reading the floor's way with Motor, under backoff (bench/plain_app.py)",
        "plain",
        database=True,
    ),
    Scenario(
        "miss",
        "GET /users/{id}, 10,000 ids, no cache (MongoDB every time)",
        "service",
        per_driver=True,
    ),
    Scenario(
        "miss-traced",
        "miss (motor) with tracing on: every request sampled, OTLP/HTTP to a sink",
        "service",
        database=True,
        traced=True,
    ),
    Scenario(
        "writes",
        "POST /users/{id}/orders, 10,000 ids, Redis cache",
        "service",
        "redis",
        write_percent=100,
        per_driver=True,
    ),
    Scenario(
        "mixed",
        "90% GET (100 hot ids) / 10% POST orders, Redis cache",
        "service",
        "redis",
        hot=HOT_SET,
        hot_from=HOT_SET,
        write_percent=10,
        per_driver=True,
    ),
)
DRIVERS = ("motor", "pymongo")


@dataclass(frozen=True)
class Run:
    """One target in a round: a scenario with one driver, from this tree or --before's."""

    scenario: Scenario
    driver: str
    before: bool = False  # the --before checkout's service

    @property
    def label(self) -> str:
        scenario = self.scenario
        name = f"{scenario.name} ({self.driver})" if scenario.per_driver else scenario.name
        return before_label(name) if self.before else name

    @property
    def hot_from(self) -> int:
        # A hot set the load writes to is each checkout's own (the next HOT_SET ids): both
        # start from the same seeded bodies instead of one reading what the other's writes
        # grew (bodies grew round after round when the hits' ids were written to).
        scenario = self.scenario
        shifted = self.before and scenario.write_percent > 0
        return scenario.hot_from + (scenario.hot if shifted else 0)


def round_runs(
    chosen: Sequence[Scenario], drivers: Sequence[str], number: int, *, before: bool
) -> list[Run]:
    """A round's runs in order. With `before`, each service run has its twin from the
    earlier checkout right beside it, first in even rounds: neither always has the warmer
    or the quieter slot."""
    runs: list[Run] = []
    for scenario in chosen:
        for driver in drivers if scenario.per_driver else ["motor"]:
            now = Run(scenario, driver)
            # Tracing and Sentinel rows have no twin (an earlier checkout may have neither):
            # they are compared with their untraced rows and with hit-redis.
            twinned = scenario.target == "service"
            twinned = twinned and not scenario.traced and scenario.cache != "sentinel"
            if not (before and twinned):
                runs.append(now)
                continue
            twin = Run(scenario, driver, before=True)
            runs += [now, twin] if number % 2 else [twin, now]
    return runs


# A development run: one short round at 1 worker, written beside the real results.
QUICK = {"rounds": 1, "duration": 3.0, "warmup": 1.0, "workers": "1"}


def _start_bare(
    module: str, stack: Stack, workers: int, extra: dict[str, str]
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    command = [
        str(BIN / "gunicorn"),
        # Its own config module: otherwise gunicorn would read the service's gunicorn.conf.py.
        "--config",
        f"python:{module}",
        f"{module}:create_app()",
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
    env = {**service_env(stack, "none", port, workers), **extra}
    return port, start_gunicorn(command, env, port, stack.log)


def _start(
    run: Run, workers: int, stack: Stack, body_bytes: int, before: Path | None, sink: OtlpReceiver
) -> tuple[int, subprocess.Popen[bytes]]:
    scenario, driver = run.scenario, run.driver
    if scenario.target == "baseline":
        return _start_bare("bench.baseline_app", stack, workers, {"BODY_BYTES": str(body_bytes)})
    if scenario.target == "plain":
        read = "cache" if scenario.cache == "memory" else "database"
        extra = {"BODY_BYTES": str(body_bytes), "PLAIN_READ": read}
        return _start_bare("bench.plain_app", stack, workers, extra)
    if scenario.target == "floor":
        return _start_bare("bench.floor_app", stack, workers, {"FLOOR_DRIVER": driver})
    tree = before if run.before else None
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint} if scenario.traced else {}
    return start_service(stack, scenario.cache, workers, tree, MONGO_DRIVER=driver, **traced)


def _run(
    run: Run,
    workers: int,
    stack: Stack,
    args: argparse.Namespace,
    body_bytes: int,
    sink: OtlpReceiver,
) -> Result:
    scenario = run.scenario
    port, process = _start(run, workers, stack, body_bytes, args.before, sink)
    exports = sink.exports
    load = {
        "connections": args.connections,
        "hot": scenario.hot,
        "hot_from": run.hot_from,
        "write_percent": scenario.write_percent,
    }
    try:
        wrk(port, args.warmup, stack.ids_file, **load)
        if scenario.database_bound:
            # wrk's warm-up connections are gone, but their slow requests (writes take
            # hundreds of ms here) still hold in-flight slots: the timed window's 50 new
            # connections would meet the bound and count fast 503s. Each ends by its deadline.
            deadline = load_settings(service_env(stack, "none", port, workers)).request
            time.sleep(deadline.deadline_seconds + 0.5)
        pids = [process.pid, *worker_pids(process.pid)]
        cpu_before = cpu_seconds(pids)
        # Counting answers by status costs wrk a Lua call per response: affordable at the
        # database-bound targets' ~1,000 req/s, not beside bare aiohttp's 40,000.
        measured = wrk(
            port, args.duration, stack.ids_file, statuses=scenario.database_bound, **load
        )
        cpu = cpu_seconds(pids) - cpu_before
        rss = memory_mb(worker_pids(process.pid))
    finally:
        stop(process)
    if scenario.traced and sink.exports == exports:
        raise RuntimeError(f"{run.label}: no spans reached the sink: was tracing on?")
    requests = measured["requests"]
    return Result(
        scenario.name,
        workers,
        round(measured["rps"], 1),
        round(measured["p50_ms"], 2),
        round(measured["p99_ms"], 2),
        int(measured["errors"]),
        round(rss, 1),
        driver=run.driver,
        cpu_us_per_request=round(cpu * 1e6 / requests, 1) if requests else 0.0,
        label=run.label,
        error_kinds={
            kind.removeprefix("errors_"): int(count)
            for kind, count in measured.items()
            if kind.startswith(("errors_", "status_")) and count
        },
        before=run.before,
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


_REFERENCE_NAMES = {
    targets.BASELINE: "bare",
    targets.MISS_FLOOR: "Motor floor",
    targets.PLAIN: "plain",
    targets.PLAIN_MISS: "plain miss",
}


def _ratio(spread: Spread | None, reference: str | None = None) -> str:
    if spread is None:
        return "—"
    name = _REFERENCE_NAMES.get(reference, reference) if reference else None
    return spread.format(2) + (f" {name}" if name else "")


def table(rows: Sequence[Row], heading: str) -> str:
    """The rows as Markdown; the `x before` columns only when some row has a twin."""
    paired = any(r.before_ratio is not None for r in rows)
    lines = [
        heading,
        "",
        f"| Target | Workers | Requests/s | x bare | {'x before | ' if paired else ''}"
        f"CPU µs/request | CPU x reference | {'CPU x before | ' if paired else ''}"
        "p50 ms | p99 ms | p99 x bare | Errors | Peak RSS/worker MB | Targets (1 worker) |",
        "| --- | ---: | ---: | ---: | " + "---: | " * (9 if paired else 7) + "--- |",
    ]
    for r in rows:
        ratio = "1.00" if r.ratio is None else r.ratio.format(2)
        p99_ratio = "1.00" if r.p99_ratio is None else r.p99_ratio.format(2)
        cpu_ratio = _ratio(r.cpu_ratio if r.cpu_reference else None, r.cpu_reference)
        rps_before = f"{_ratio(r.before_ratio)} | " if paired else ""
        cpu_before = f"{_ratio(r.before_cpu_ratio)} | " if paired else ""
        lines.append(
            f"| {r.name} | {r.workers} | {r.requests_per_second.format()} | {ratio} "
            f"| {rps_before}{r.cpu_us_per_request.format()} | {cpu_ratio} | {cpu_before}"
            f"{r.p50_ms.format(2)} | {r.p99_ms.format(2)} | {p99_ratio} | {r.errors} "
            f"| {r.peak_rss_mb:.1f} | {', '.join(r.verdicts)} |"
        )
    lines += ["", targets.tally(rows)]
    return "\n".join(lines)


def _capacity(rows: Sequence[Row], args: argparse.Namespace) -> dict[str, object] | None:
    """The capacity model's inputs: Redis-cache hits (production's backend), Motor misses."""
    cpu = {row.name: row.cpu_us_per_request.median for row in rows if row.workers == 1}
    if "hit-redis" not in cpu or "miss (motor)" not in cpu:
        return None
    rounds = max(row.rounds for row in rows)
    source = (
        f"hit-redis and miss (motor) at 1 worker, medians of {rounds} round"
        f"{'s' if rounds != 1 else ''}"
    )
    costs = capacity.Costs(hit_us=cpu["hit-redis"], miss_us=cpu["miss (motor)"])
    text = capacity.render(
        costs, args.rate, args.hit_ratio, args.pod_workers, args.utilisation, source
    )
    return {"costs": asdict(costs), "source": source, "text": text}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds at 1 worker")
    parser.add_argument(
        "--multi-worker-rounds",
        type=int,
        default=1,
        help="rounds for worker counts above 1 (no targets judged there); at most --rounds",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="timed window, seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up, seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated; baseline always runs",
    )
    parser.add_argument(
        "--drivers", default=",".join(DRIVERS), help="drivers for floor, miss, writes and mixed"
    )
    model = parser.add_argument_group("capacity model")
    model.add_argument("--rate", type=float, default=10_000, help="reads per second")
    model.add_argument("--hit-ratio", type=float, default=0.9)
    model.add_argument("--pod-workers", type=int, default=2, help="gunicorn workers per pod")
    model.add_argument("--utilisation", type=float, default=0.7, help="planned busy share")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development: "
        + ", ".join(f"--{k} {v}" for k, v in QUICK.items())
        + " unless given; writes bench-quick.json/.png, never the README",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="PATH",
        help="an earlier checkout with its own venv (git worktree add PATH <commit>; make venv "
        "there): its service runs beside this one's in every 1-worker round, and the targets "
        "compare with it",
    )
    parser.add_argument("--update-readme", action="store_true")
    return parser


def _checkout(path: Path) -> str:
    """`/work/wt-before at a6e53c3`: what the before rows ran."""
    found = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{path} at {found.stdout.strip() or 'an unknown commit'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
        if args.update_readme:
            parser.error("--quick results do not go into the README")
    if args.before is not None:
        args.before = args.before.resolve()
        for needed in (".venv/bin/gunicorn", "gunicorn.conf.py"):
            if not (args.before / needed).exists():
                parser.error(
                    f"--before {args.before}: no {needed} (git worktree add PATH <commit>, "
                    "then make venv in it)"
                )
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    if not chosen or chosen[0].name != "baseline":
        chosen.insert(0, SCENARIOS[0])  # ratios need the baseline of the same round
    drivers = args.drivers.split(",")
    worker_counts = [int(w) for w in args.workers.split(",")]

    rounds, multi_worker_rounds = int(args.rounds), int(args.multi_worker_rounds)

    def rounds_for(workers: int) -> int:
        return rounds if workers == 1 else min(rounds, multi_worker_rounds)

    started = time.monotonic()
    results: list[Result] = []
    sentinel = any(s.cache == "sentinel" for s in chosen)
    with (
        stack("user-service-bench-", sentinel) as servers,
        otlp_receiver(decode_spans=False) as sink,
    ):
        body_bytes = _typical_body_bytes(servers)
        for number in range(1, max(map(rounds_for, worker_counts)) + 1):
            for workers in worker_counts:
                if number > rounds_for(workers):
                    continue
                # The earlier checkout at 1 worker only: the targets are judged there.
                before = args.before is not None and workers == 1
                for run in round_runs(chosen, drivers, number, before=before):
                    result = _run(run, workers, servers, args, body_bytes, sink)
                    result.round = number
                    print(
                        f"bench: round {number}, {result.name}, {workers} worker(s): "
                        f"{result.requests_per_second:,.0f} req/s, "
                        f"{result.cpu_us_per_request:,.0f} CPU µs/request"
                        + (f", errors {result.error_kinds}" if result.errors else ""),
                        flush=True,
                    )
                    results.append(result)
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    targets.judge(rows)
    per_count = ", ".join(
        f"{rounds_for(w)} at {w} worker{'s' if w != 1 else ''}" for w in worker_counts
    )
    settings = (
        f"wrk, 2 threads, {args.connections} connections, {args.warmup:g} s warm-up, "
        f"{args.duration:g} s window; response body {body_bytes} bytes; rounds: {per_count}"
    )
    if args.before is not None:
        settings += f"; before rows: {_checkout(args.before)}, 1 worker, in the same rounds"
    text = table(rows, f"Machine: {machine()}. Load: {settings}.")
    model = _capacity(rows, args)
    name = "bench-quick" if args.quick else "bench"
    chart.draw(rows, RESULTS / f"{name}.png", f"{machine()}; {settings}")
    seconds = round(time.monotonic() - started)
    data = {
        "machine": machine(),
        "load": settings,
        "seconds": seconds,
        "rows": [asdict(row) for row in rows],
        "results": [asdict(r) for r in results],
        "capacity": model,
    }
    path = publish(name, data, text, readme=args.update_readme)
    if model is not None:
        print(f"\n{model['text']}")
        if args.update_readme:
            update_readme("bench-capacity", str(model["text"]))
    print(f"\nbench: {seconds} s; results in {path.relative_to(ROOT)} and {name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
