"""Rounds of runs folded into one row per target: the median of each figure and its spread.

A single run on a shared 2-core machine can be off by half; a row says what the middle
round measured and how far the others strayed. Ratios are paired: each round's figure
over the same round's reference (bare aiohttp for throughput and latency, the reference
`reference_for` names for CPU), then the median of those ratios. A slow minute then moves
both sides of a ratio instead of one.

`make bench --before PATH` runs an earlier checkout's service beside this one's in the
same rounds: its results are marked `before` and named with BEFORE_SUFFIX, and each of
this tree's rows is paired with its twin the same way, round by round.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

BEFORE_SUFFIX = " before"


def before_label(name: str) -> str:
    """What the earlier checkout's run of the target `name` is called: `miss (motor) before`."""
    return f"{name}{BEFORE_SUFFIX}"


@dataclass
class Result:
    """One run of one target in one round, as wrk and /proc measured it."""

    scenario: str
    workers: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_rss_mb: float
    driver: str = "motor"
    # User + system CPU of the target's processes (master and workers) during the timed
    # window, over the requests answered in it: far steadier than req/s on a shared machine.
    cpu_us_per_request: float = 0.0
    round: int = 1
    label: str = ""  # how the table names it: "miss (motor)"; the scenario when empty
    # wrk's error counts by kind (connect, read, write, status: a non-2xx/3xx answer,
    # timeout) and, for the database-bound targets, by status (status_503), when not zero.
    error_kinds: dict[str, int] = field(default_factory=dict)
    before: bool = False  # the earlier checkout's service (--before), not this tree's

    @property
    def name(self) -> str:
        return self.label or self.scenario


@dataclass(frozen=True)
class Spread:
    """The median of some rounds' values and the lowest and highest of them."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(ordered), ordered[0], ordered[-1])

    def format(self, digits: int = 0, *, grouping: bool = True) -> str:
        """`16,777 (15,901-17,204)`; the median alone when every round agreed."""
        spec = f"{',' if grouping else ''}.{digits}f"
        median = format(self.median, spec)
        if format(self.low, spec) == format(self.high, spec):
            return median
        return f"{median} ({format(self.low, spec)}-{format(self.high, spec)})"


@dataclass
class Row:
    """A target's figures over its rounds, at one worker count."""

    name: str
    scenario: str
    driver: str
    workers: int
    rounds: int
    requests_per_second: Spread
    cpu_us_per_request: Spread
    p50_ms: Spread
    p99_ms: Spread
    errors: int  # over all rounds: one error anywhere fails "zero errors"
    peak_rss_mb: float  # the largest of the rounds: a bound holds in every round or not at all
    ratio: Spread | None = None  # requests/s over bare aiohttp's, per round
    p99_ratio: Spread | None = None
    cpu_ratio: Spread | None = None  # CPU µs/request over the reference's, per round
    cpu_reference: str | None = None
    before: bool = False  # the earlier checkout's service
    # This tree's row over its twin from the earlier checkout, per round: requests/s, CPU
    # µs/request, p99. None without --before (and on the twin itself).
    before_ratio: Spread | None = None
    before_cpu_ratio: Spread | None = None
    before_p99_ratio: Spread | None = None
    verdicts: list[str] = field(default_factory=list)


def _paired(
    mine: Sequence[Result],
    theirs: dict[int, Result],
    figure: Callable[[Result], float],
) -> Spread | None:
    ratios = [
        figure(result) / figure(theirs[result.round])
        for result in mine
        if result.round in theirs and figure(theirs[result.round]) > 0
    ]
    return Spread.of(ratios) if ratios else None


def summarise(
    results: Sequence[Result],
    baseline: str,
    reference_for: Callable[[str], str | None],
) -> list[Row]:
    """One row per (name, workers) in the order first seen.

    `baseline` names the bare aiohttp runs; `reference_for(name)` names the runs whose CPU
    per request a row is compared with (None: no CPU ratio).
    """
    groups: dict[tuple[str, int], list[Result]] = {}
    for result in results:
        groups.setdefault((result.name, result.workers), []).append(result)

    def by_round(name: str, workers: int) -> dict[int, Result]:
        return {r.round: r for r in groups.get((name, workers), [])}

    rows = []
    for (name, workers), runs in groups.items():
        first = runs[0]
        row = Row(
            name=name,
            scenario=first.scenario,
            driver=first.driver,
            workers=workers,
            rounds=len(runs),
            requests_per_second=Spread.of(r.requests_per_second for r in runs),
            cpu_us_per_request=Spread.of(r.cpu_us_per_request for r in runs),
            p50_ms=Spread.of(r.p50_ms for r in runs),
            p99_ms=Spread.of(r.p99_ms for r in runs),
            errors=sum(r.errors for r in runs),
            peak_rss_mb=max(r.peak_rss_mb for r in runs),
            before=first.before,
        )
        if name != baseline:
            bare = by_round(baseline, workers)
            row.ratio = _paired(runs, bare, lambda r: r.requests_per_second)
            row.p99_ratio = _paired(runs, bare, lambda r: r.p99_ms)
        reference = reference_for(name)
        if reference is not None and reference != name:
            row.cpu_ratio = _paired(
                runs, by_round(reference, workers), lambda r: r.cpu_us_per_request
            )
            row.cpu_reference = reference if row.cpu_ratio is not None else None
        if not first.before and (twin := by_round(before_label(name), workers)):
            row.before_ratio = _paired(runs, twin, lambda r: r.requests_per_second)
            row.before_cpu_ratio = _paired(runs, twin, lambda r: r.cpu_us_per_request)
            row.before_p99_ratio = _paired(runs, twin, lambda r: r.p99_ms)
        rows.append(row)
    return rows
