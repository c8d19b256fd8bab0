"""Issue #16's targets, judged on the medians of the rounds (1 worker only).

Every verdict reads `PASS <target>` or `MISS <target>`; the table prints them beside the
figures they judge, and `make bench` counts the misses at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.summary import Row

BASELINE, MISS_FLOOR = "baseline", "floor (motor)"
PLAIN, PLAIN_MISS = "plain", "plain-miss"  # bench/plain_app.py: hits, misses
HIT_RATIO = {"hit-memory": 0.75, "hit-redis": 0.60}  # req/s over bare aiohttp's, at least
HIT_CPU_RATIO = 1.33  # memory hits: CPU µs/request over bare aiohttp's, at most
MISS_CPU_RATIO = 1.10  # misses: CPU µs/request over the bare-Motor floor's, at most
P99_RATIO = 2.0  # hits: p99 over bare aiohttp's, at most
RSS_LIMIT_MB = 60.0  # the largest peak RSS of a worker in any round
# Scenarios that are yardsticks, not the service: bare aiohttp, the plain app, the floors.
REFERENCES = frozenset({BASELINE, PLAIN, PLAIN_MISS, "floor"})


def cpu_reference(name: str) -> str | None:
    """Whose CPU per request a row is compared with: misses with the bare-Motor floor,
    everything else the service does with bare aiohttp."""
    if name == BASELINE or name.startswith("floor"):
        return None
    return MISS_FLOOR if name.startswith("miss") else BASELINE


def _verdict(ok: bool, target: str) -> str:
    return f"{'PASS' if ok else 'MISS'} {target}"


def judge(rows: Sequence[Row]) -> None:
    """Fill in each 1-worker service row's verdicts."""
    medians = {row.name: row.requests_per_second.median for row in rows if row.workers == 1}
    for row in rows:
        if row.workers != 1 or row.scenario in REFERENCES:
            continue
        verdicts = []
        if (target := HIT_RATIO.get(row.name)) is not None and row.ratio is not None:
            verdicts.append(_verdict(row.ratio.median >= target, f"req/s ≥{target:.2f}x"))
        if row.name == "hit-memory":
            if row.cpu_ratio is not None:
                ok = row.cpu_ratio.median <= HIT_CPU_RATIO
                verdicts.append(_verdict(ok, f"CPU ≤{HIT_CPU_RATIO}x bare"))
            if "hit-redis" in medians:
                ok = medians["hit-memory"] >= medians["hit-redis"]
                verdicts.append(_verdict(ok, "≥ Redis hits"))
        if row.name in HIT_RATIO and row.p99_ratio is not None:
            verdicts.append(_verdict(row.p99_ratio.median <= P99_RATIO, f"p99 ≤{P99_RATIO:g}x"))
        if row.scenario == "miss" and row.cpu_ratio is not None:
            ok = row.cpu_ratio.median <= MISS_CPU_RATIO
            verdicts.append(_verdict(ok, f"CPU ≤{MISS_CPU_RATIO:.2f}x Motor floor"))
        verdicts.append(_verdict(row.errors == 0, "0 errors"))
        verdicts.append(_verdict(row.peak_rss_mb <= RSS_LIMIT_MB, f"RSS ≤{RSS_LIMIT_MB:g} MB"))
        row.verdicts = verdicts


def misses(rows: Sequence[Row]) -> list[str]:
    """`hit-memory: req/s ≥0.75x`, ... for every target not met."""
    return [
        f"{row.name}: {verdict.removeprefix('MISS ')}"
        for row in rows
        for verdict in row.verdicts
        if verdict.startswith("MISS")
    ]


def tally(rows: Sequence[Row]) -> str:
    """The table's last line: how many targets were met, and which were not."""
    missed = misses(rows)
    judged = sum(len(r.verdicts) for r in rows)
    return f"Targets met: {judged - len(missed)} of {judged}" + (
        f"; missed: {'; '.join(missed)}." if missed else "."
    )
