"""How many cores, pods and database operations a read load needs, from measured CPU costs.

A read is either a cache hit (no database call) or a miss (two queries at once: the user
and their newest orders). With `hit_us` and `miss_us` the service's CPU per request on
each path, as `make bench` measured them, a load of `rate` reads/s at hit ratio `h` keeps
`rate * (h * hit_us + (1 - h) * miss_us) / 1e6` cores busy. Planning for `utilisation`
(busy share of each core) leaves room for bursts and garbage collection; a gunicorn worker
runs one event loop, so a pod of N workers gets N cores' worth at most.

Not counted: the database's and Redis's own CPU, and the latency a loaded database adds.
`python -m bench.capacity --rate 20000 --hit-ratio 0.95` recomputes it from the last run's
bench/results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

QUERIES_PER_MISS = 2  # UserUseCases.get_user_with_orders: users.find_one + orders.find
HIT_RATIOS = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Costs:
    """CPU µs per request measured by `make bench` (medians of its rounds, 1 worker)."""

    hit_us: float
    miss_us: float


@dataclass(frozen=True)
class Plan:
    rate: float
    hit_ratio: float
    cpu_us_per_request: float
    busy_cores: float
    cores: float  # at the planned utilisation
    pods: int
    database_ops_per_second: float


def plan(
    costs: Costs, rate: float, hit_ratio: float, workers_per_pod: int, utilisation: float
) -> Plan:
    if not 0 <= hit_ratio <= 1:
        raise ValueError(f"hit ratio {hit_ratio} is not between 0 and 1")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation {utilisation} is not in (0, 1]")
    per_request = hit_ratio * costs.hit_us + (1 - hit_ratio) * costs.miss_us
    busy = rate * per_request / 1e6
    cores = busy / utilisation
    return Plan(
        rate=rate,
        hit_ratio=hit_ratio,
        cpu_us_per_request=per_request,
        busy_cores=busy,
        cores=cores,
        pods=max(1, math.ceil(round(cores / workers_per_pod, 9))),
        database_ops_per_second=rate * (1 - hit_ratio) * QUERIES_PER_MISS,
    )


def render(
    costs: Costs,
    rate: float,
    hit_ratio: float,
    workers_per_pod: int,
    utilisation: float,
    source: str,
    hit_ratios: Sequence[float] = HIT_RATIOS,
) -> str:
    """The README's capacity section: the inputs, a table over hit ratios, one worked example."""
    ratios = sorted({*hit_ratios, hit_ratio})
    lines = [
        f"Inputs: {costs.hit_us:,.0f} µs of CPU per cache hit and {costs.miss_us:,.0f} µs per "
        f"miss ({source}); cores planned at {utilisation:.0%} busy; pods of "
        f"{workers_per_pod} workers (one core each); {QUERIES_PER_MISS} database queries "
        "per miss, none per hit.",
        "",
        f"At {rate:,.0f} reads/s:",
        "",
        f"| Hit ratio | CPU µs/request | Cores busy | Cores at {utilisation:.0%} "
        f"| Pods ({workers_per_pod} workers) | Database queries/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for ratio in ratios:
        p = plan(costs, rate, ratio, workers_per_pod, utilisation)
        lines.append(
            f"| {ratio:.0%} | {p.cpu_us_per_request:,.0f} | {p.busy_cores:,.2f} "
            f"| {p.cores:,.2f} | {p.pods} | {p.database_ops_per_second:,.0f} |"
        )
    p = plan(costs, rate, hit_ratio, workers_per_pod, utilisation)
    misses = rate * (1 - hit_ratio)
    lines += [
        "",
        f"Worked example: {rate:,.0f} reads/s at {hit_ratio:.0%} hits is "
        f"{hit_ratio:g} x {costs.hit_us:,.0f} + {1 - hit_ratio:.2g} x {costs.miss_us:,.0f} "
        f"= {p.cpu_us_per_request:,.0f} µs per request, so {p.busy_cores:,.2f} cores busy; "
        f"at {utilisation:.0%} that is {p.cores:,.2f} cores, {p.pods} pod"
        f"{'s' if p.pods != 1 else ''} of {workers_per_pod} workers. The {misses:,.0f} "
        f"misses/s send {p.database_ops_per_second:,.0f} queries/s to MongoDB.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.harness import RESULTS

    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--rate", type=float, default=10_000, help="reads per second")
    parser.add_argument("--hit-ratio", type=float, default=0.9)
    parser.add_argument("--pod-workers", type=int, default=2)
    parser.add_argument("--utilisation", type=float, default=0.7)
    args = parser.parse_args(argv)
    data = json.loads((RESULTS / "bench.json").read_text())
    costs = Costs(**data["capacity"]["costs"])
    source = data["capacity"]["source"]
    print(render(costs, args.rate, args.hit_ratio, args.pod_workers, args.utilisation, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
