"""The bench's floors, judged on the medians of the rounds (1 worker only).

Two kinds, both paired round by round (bench/summary.py):

- against the plain app (bench/plain_app.py: the service's packages used the way their
  docs show): a memory-cache hit at most HIT_CPU_OVER_PLAIN of the plain app's CPU per
  hit, a miss at most MISS_CPU_OVER_PLAIN of the plain app's CPU per miss;
- against the previous main (`make bench ARGS="--before PATH"`, the same scenarios from
  an earlier checkout in the same rounds): every service row keeps BEFORE_RPS of its
  requests/s and at most BEFORE_CPU of its CPU per request, BEFORE_P99 of its p99 and
  BEFORE_RSS of its peak RSS. Hits are the issue's floors; for the other rows the same
  band is "no worse than before" with room for the noise of a shared 2-core machine.
  Without --before these read `not judged: no --before`.

And every service row answers without errors. Every verdict reads `PASS <target>` or
`MISS <target>` (or NOT_JUDGED); the table prints them beside the figures they judge, and
`make bench` counts them at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.summary import BEFORE_SUFFIX, Row, before_label

BASELINE, MISS_FLOOR = "baseline", "floor (motor)"
PLAIN, PLAIN_MISS = "plain", "plain-miss"  # bench/plain_app.py: hits, misses
HIT_CPU_OVER_PLAIN = 0.80  # memory hits: CPU µs/request over the plain app's, at most
MISS_CPU_OVER_PLAIN = 1.05  # misses: CPU µs/request over the plain app's misses, at most
BEFORE_RPS = 0.90  # requests/s over the earlier checkout's, at least
BEFORE_CPU = 1.10  # CPU µs/request over the earlier checkout's, at most
# p99 rests on the slowest 1% of a window: it swings more between runs than the medians.
BEFORE_P99 = 1.25
BEFORE_RSS = 1.05  # peak RSS per worker over the earlier checkout's (largest of the rounds)
NOT_JUDGED = "not judged: no --before"
# Scenarios that are yardsticks, not the service: bare aiohttp, the plain app, the floors.
# The rows with tracing on, and the untraced row each is compared with.
TRACED_TWINS = {"hit-redis-traced": "hit-redis", "miss-traced": "miss (motor)"}
REFERENCES = frozenset({BASELINE, PLAIN, PLAIN_MISS, "floor"})


def cpu_reference(name: str) -> str | None:
    """Whose CPU per request a row is compared with: hits with the plain app's hits,
    misses with its misses, the plain misses with the bare-Motor floor, traced rows with
    their untraced twins, the rest (the plain hits too) with bare aiohttp. An earlier
    checkout's row as this tree's."""
    name = name.removesuffix(BEFORE_SUFFIX)
    if name == BASELINE or name.startswith("floor"):
        return None
    if name in TRACED_TWINS:  # what tracing costs: the same load untraced
        return TRACED_TWINS[name]
    if name.startswith("hit-"):
        return PLAIN
    if name == PLAIN_MISS:
        return MISS_FLOOR
    return PLAIN_MISS if name.startswith("miss") else BASELINE


def _verdict(ok: bool, target: str) -> str:
    return f"{'PASS' if ok else 'MISS'} {target}"


def _against_before(row: Row, twin: Row) -> list[str]:
    verdicts = []
    if row.before_ratio is not None:
        ok = row.before_ratio.median >= BEFORE_RPS
        verdicts.append(_verdict(ok, f"req/s ≥{BEFORE_RPS:.2f}x before"))
    if row.before_cpu_ratio is not None:
        ok = row.before_cpu_ratio.median <= BEFORE_CPU
        verdicts.append(_verdict(ok, f"CPU ≤{BEFORE_CPU:.2f}x before"))
    if row.before_p99_ratio is not None:
        ok = row.before_p99_ratio.median <= BEFORE_P99
        verdicts.append(_verdict(ok, f"p99 ≤{BEFORE_P99:.2f}x before"))
    ok = row.peak_rss_mb <= twin.peak_rss_mb * BEFORE_RSS
    verdicts.append(_verdict(ok, f"RSS ≤{BEFORE_RSS:.2f}x before"))
    return verdicts


def judge(rows: Sequence[Row]) -> None:
    """Fill in each 1-worker service row's verdicts (not the earlier checkout's rows)."""
    by_name = {row.name: row for row in rows if row.workers == 1}
    for row in rows:
        if row.workers != 1 or row.before or row.scenario in REFERENCES:
            continue
        verdicts = []
        if row.name == "hit-memory" and row.cpu_reference == PLAIN and row.cpu_ratio is not None:
            ok = row.cpu_ratio.median <= HIT_CPU_OVER_PLAIN
            verdicts.append(_verdict(ok, f"CPU ≤{HIT_CPU_OVER_PLAIN:.2f}x plain"))
        if row.scenario == "miss" and row.cpu_reference == PLAIN_MISS and row.cpu_ratio is not None:
            ok = row.cpu_ratio.median <= MISS_CPU_OVER_PLAIN
            verdicts.append(_verdict(ok, f"CPU ≤{MISS_CPU_OVER_PLAIN:.2f}x plain miss"))
        twin = by_name.get(before_label(row.name))
        verdicts += [NOT_JUDGED] if twin is None else _against_before(row, twin)
        verdicts.append(_verdict(row.errors == 0, "0 errors"))
        row.verdicts = verdicts


def misses(rows: Sequence[Row]) -> list[str]:
    """`hit-memory: CPU ≤0.80x plain`, ... for every target not met."""
    return [
        f"{row.name}: {verdict.removeprefix('MISS ')}"
        for row in rows
        for verdict in row.verdicts
        if verdict.startswith("MISS")
    ]


def tally(rows: Sequence[Row]) -> str:
    """The table's last line: how many targets were met, which were not, and how many
    rows had no earlier checkout to be compared with."""
    missed = misses(rows)
    judged = sum(1 for r in rows for v in r.verdicts if v.startswith(("PASS", "MISS")))
    unpaired = sum(1 for r in rows if NOT_JUDGED in r.verdicts)
    return (
        f"Targets met: {judged - len(missed)} of {judged}"
        + (f"; missed: {'; '.join(missed)}" if missed else "")
        + (f"; against the previous main, {unpaired} rows {NOT_JUDGED}" if unpaired else "")
        + "."
    )
