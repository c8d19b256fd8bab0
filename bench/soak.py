"""`make soak`: minutes of mixed load, watching each worker's memory and the error count.

90% cache-hit reads / 10% order writes (Redis cache, production configuration) at 50
connections for `--minutes` (default 5), after a warm-up. Every `--every` seconds it
records requests/s, errors and each worker's RSS. Passes when the workers' RSS grew less
than 10% from the end of the warm-up to the end of the run and no request failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.harness import (
    HOT_SET,
    machine,
    memory_mb,
    publish,
    stack,
    start_service,
    stop,
    wrk,
)
from tests.helpers.service import worker_pids

RSS_GROWTH_LIMIT = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds before the baseline RSS"
    )
    parser.add_argument("--every", type=float, default=30.0, help="seconds per sample")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    load = {"connections": 50, "hot": HOT_SET, "write_percent": 10}
    samples: list[dict[str, float]] = []
    with stack("user-service-soak-") as servers:
        port, process = start_service(servers, "redis", args.workers)
        try:
            wrk(port, args.warmup, servers.ids_file, statuses=True, **load)
            pids = worker_pids(process.pid)
            start_rss = memory_mb(pids, "VmRSS")
            print(f"soak: warm, workers {pids} at {start_rss:.1f} MB; soaking...", flush=True)
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                window = wrk(port, args.every, servers.ids_file, statuses=True, **load)
                rss = memory_mb(pids, "VmRSS")
                samples.append({**window, "rss_mb": rss, "t": round(time.monotonic() - started)})
                print(
                    f"soak: {samples[-1]['t']:>4.0f} s  {window['rps']:>8,.0f} req/s  "
                    f"errors {window['errors']:.0f}  RSS {rss:.1f} MB",
                    flush=True,
                )
            replaced = worker_pids(process.pid) != pids
        finally:
            stop(process)
    end_rss = samples[-1]["rss_mb"]
    growth = (end_rss - start_rss) / start_rss
    errors = int(sum(s["errors"] for s in samples))
    statuses: dict[str, int] = {}
    for sample in samples:
        for key, n in sample.items():
            if key.startswith("status_"):
                code = key.removeprefix("status_")
                statuses[code] = statuses.get(code, 0) + int(n)
    requests = sum(s["rps"] * args.every for s in samples)
    passed = growth < RSS_GROWTH_LIMIT and errors == 0 and not replaced
    text = "\n".join(
        [
            f"Machine: {machine()}. Load: wrk, 50 connections, 90% GET (100 hot ids) / 10% "
            f"POST orders, Redis cache, {args.workers} workers, {args.minutes:g} min after a "
            f"{args.warmup:g} s warm-up.",
            "",
            "| Requests | Mean req/s | Errors | RSS after warm-up MB | RSS at end MB | Growth "
            "| Worker restarts | Verdict |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {requests:,.0f} | {requests / (args.minutes * 60):,.0f} | {errors} "
            f"| {start_rss:.1f} | {end_rss:.1f} | {growth:+.1%} | {'yes' if replaced else 0} "
            f"| {'PASS' if passed else 'FAIL'} (growth < 10%, 0 errors) |",
        ]
    )
    if statuses:
        text += "\n\nNon-2xx answers: " + ", ".join(
            f"{n} x {c}" for c, n in sorted(statuses.items())
        )
        text += " (the server's warnings and errors: bench/results/soak-servers.log)."
    data = {"machine": machine(), "samples": samples, "start_rss_mb": start_rss}
    publish("soak", data, text, readme=args.update_readme)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
