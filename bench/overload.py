"""`make overload`: offer three times the sustainable rate, then half of it, and watch.

The service runs with its production configuration and `CACHE_BACKEND=none`, so every
read goes to MongoDB, and MongoDB answers each `find` after `--db-ms` (a `failCommand`
fail point with `blockConnection`): the database, not this machine's CPU, sets the
capacity, as in production. (With the test server's own speed as the limit, the load
generator, SecantusDB and the service fight over two cores and the measurement is of
that fight.) First wrk (closed loop, 50 connections) measures the sustainable rate R.
Then an open-loop generator (requests leave on a fixed schedule, whether or not earlier
ones were answered, as real clients do) offers 3R for `--overload` seconds and R/2 for
`--recovery` seconds.

Passes when, under overload, the excess is refused with fast 503s (p99 of the 503s under
100 ms) instead of queueing until clients give up (no client timeout at 5 s, no other
failure), and once the load drops the very first second is served without a 503.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import pymongo
import uvloop

from bench.harness import machine, publish, stack, start_service, stop, wrk

CLIENT_TIMEOUT = 5.0
FAST_503_MS = 100.0


@dataclass(frozen=True, slots=True)
class Outcome:
    sent: float  # seconds since the phase began
    status: int  # 0: the client gave up or the connection failed
    ms: float


async def _offer(base: str, ids: list[str], rate: float, seconds: float) -> list[Outcome]:
    """Send `rate` requests/s for `seconds` on a fixed schedule; gather every outcome."""
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def one(index: int) -> None:
            sent = loop.time()
            try:
                async with http.get(f"{base}/users/{ids[index % len(ids)]}") as reply:
                    await reply.read()
                    status = reply.status
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            outcomes.append(Outcome(sent - began, status, (loop.time() - sent) * 1000))

        tasks: set[asyncio.Task[None]] = set()
        total = int(rate * seconds)
        for index in range(total):
            delay = began + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(index * 7919))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return outcomes


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    offered_per_s: float
    sent_per_s: float
    ok_per_s: float
    ok_p99_ms: float
    shed: int  # 503s
    shed_p99_ms: float
    failed: int  # client timeouts, connection errors, any status but 200 and 503
    first_second_503: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.offered_per_s:,.0f} | {self.sent_per_s:,.0f} "
            f"| {self.ok_per_s:,.0f} | {self.ok_p99_ms:,.0f} | {self.shed:,} "
            f"| {self.shed_p99_ms:.1f} | {self.failed} | {self.first_second_503} |"
        )


def _summary(name: str, rate: float, seconds: float, outcomes: list[Outcome]) -> Phase:
    statuses = Counter(o.status for o in outcomes)
    ok = [o.ms for o in outcomes if o.status == 200]
    shed = [o.ms for o in outcomes if o.status == 503]
    return Phase(
        name,
        rate,
        len(outcomes) / seconds,
        len(ok) / seconds,
        _percentile(ok, 0.99),
        len(shed),
        _percentile(shed, 0.99),
        sum(n for status, n in statuses.items() if status not in (200, 503)),
        sum(1 for o in outcomes if o.sent < 1.0 and o.status == 503),
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="make overload", description=__doc__)
    parser.add_argument("--overload", type=float, default=20.0, help="seconds at 3x")
    parser.add_argument("--recovery", type=float, default=10.0, help="seconds at 0.5x")
    parser.add_argument("--db-ms", type=int, default=20, help="MongoDB time per find")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    with stack("user-service-overload-") as servers:
        ids = Path(servers.ids_file).read_text().split()
        port, process = start_service(servers, "none", 1)
        admin: pymongo.MongoClient[dict[str, object]]
        with pymongo.MongoClient(servers.mongo.url) as admin:
            admin.admin.command(
                "configureFailPoint",
                "failCommand",
                mode="alwaysOn",
                data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": args.db_ms},
            )
        try:
            wrk(port, 3, servers.ids_file)
            sustainable = wrk(port, 10, servers.ids_file)
            rate = sustainable["rps"]
            print(f"overload: sustainable {rate:,.0f} req/s; offering {3 * rate:,.0f}", flush=True)
            base = f"http://127.0.0.1:{port}"
            hot = uvloop.run(_offer(base, ids, 3 * rate, args.overload))
            calm = uvloop.run(_offer(base, ids, rate / 2, args.recovery))
        finally:
            stop(process)
    phases = [
        _summary("3x", 3 * rate, args.overload, hot),
        _summary("0.5x", rate / 2, args.recovery, calm),
    ]
    over, after = phases
    passed = (
        over.shed > 0
        and over.shed_p99_ms < FAST_503_MS
        and over.failed == 0
        and after.failed == 0
        and after.first_second_503 == 0
    )
    text = "\n".join(
        [
            f"Machine: {machine()}. One worker, `CACHE_BACKEND=none` (every read goes to "
            f"MongoDB, which takes {args.db_ms} ms per find), `MAX_IN_FLIGHT` at its default. "
            f"Sustainable rate (wrk, 50 connections): "
            f"{rate:,.0f} req/s, p99 {sustainable['p99_ms']:.0f} ms. Open-loop load: "
            f"{args.overload:g} s at 3x, then {args.recovery:g} s at 0.5x.",
            "",
            "| Phase | Offered req/s | Sent req/s | 200s per s | 200 p99 ms | 503s | 503 p99 ms "
            "| Timeouts and failures | 503s in the first second |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(phase.row() for phase in phases),
            "",
            f"Verdict: {'PASS' if passed else 'FAIL'} (fast 503s under overload, p99 < "
            f"{FAST_503_MS:g} ms; no timeouts or failures; no 503 once the load drops).",
        ]
    )
    data = {"machine": machine(), "sustainable": sustainable, "phases": [asdict(p) for p in phases]}
    publish("overload", data, text, readme=args.update_readme)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
