"""`make bench`'s arithmetic, without servers: rounds into medians, verdicts, capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import capacity, chart, targets
from bench.__main__ import SCENARIOS, round_runs, table
from bench.summary import BEFORE_SUFFIX, Result, Spread, summarise


def result(name: str, round: int, rps: float, cpu: float, **figures: float) -> Result:
    """A run named as the table names it: `miss (motor)`, `hit-memory before`."""
    before = name.endswith(BEFORE_SUFFIX)
    scenario, _, driver = name.removesuffix(BEFORE_SUFFIX).partition(" (")
    return Result(
        scenario=scenario,
        workers=int(figures.get("workers", 1)),
        requests_per_second=rps,
        p50_ms=figures.get("p50", 1.0),
        p99_ms=figures.get("p99", 2.0),
        errors=int(figures.get("errors", 0)),
        peak_rss_mb=figures.get("rss", 50.0),
        driver=driver.rstrip(")") or "motor",
        cpu_us_per_request=cpu,
        round=round,
        label=name,
        before=before,
    )


def test_spread_is_the_median_and_the_extremes() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([4.0, 1.0, 2.0, 3.0]) == Spread(2.5, 1.0, 4.0)
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])


def test_a_spread_prints_its_range_unless_the_rounds_agree() -> None:
    assert Spread(16777.4, 15901.0, 17204.2).format() == "16,777 (15,901-17,204)"
    assert Spread(0.456, 0.44, 0.481).format(2) == "0.46 (0.44-0.48)"
    assert Spread(24.0, 24.2, 23.9).format() == "24"


def test_ratios_pair_each_round_with_the_same_rounds_reference() -> None:
    # Round 2 is slow for everyone: paired, the hit's ratios stay the same in every round.
    results = [
        result("baseline", 1, 40_000, 20),
        result("plain", 1, 30_000, 20),
        result("hit-memory", 1, 20_000, 40, p99=3.0),
        result("baseline", 2, 20_000, 30),
        result("plain", 2, 15_000, 30),
        result("hit-memory", 2, 10_000, 60, p99=5.0),
        result("baseline", 3, 40_000, 20),
        result("plain", 3, 30_000, 20),
        result("hit-memory", 3, 20_000, 40, p99=4.0, errors=1, rss=61.0),
    ]
    baseline, plain, hit = summarise(results, targets.BASELINE, targets.cpu_reference)
    assert baseline.ratio is None
    assert baseline.cpu_ratio is None
    assert hit.rounds == 3
    assert hit.requests_per_second == Spread(20_000, 10_000, 20_000)
    assert hit.ratio == Spread(0.5, 0.5, 0.5)
    assert hit.cpu_ratio == Spread(2.0, 2.0, 2.0)
    assert hit.cpu_reference == targets.PLAIN  # hits: CPU over the plain app's hits
    assert plain.cpu_reference == targets.BASELINE
    assert hit.p99_ratio == Spread(2.0, 1.5, 2.5)
    assert hit.errors == 1  # summed: an error in any round counts
    assert hit.peak_rss_mb == 61.0  # the worst round


def test_rows_keep_worker_counts_apart() -> None:
    results = [
        result("baseline", 1, 40_000, 20),
        result("baseline", 1, 50_000, 20, workers=2),
        result("hit-redis", 1, 20_000, 40),
        result("hit-redis", 1, 30_000, 40, workers=2),
    ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    assert [(r.name, r.workers) for r in rows] == [
        ("baseline", 1),
        ("baseline", 2),
        ("hit-redis", 1),
        ("hit-redis", 2),
    ]
    assert rows[3].ratio == Spread(0.6, 0.6, 0.6)


def test_rows_pair_with_their_before_twins_round_by_round() -> None:
    # Round 2 is slow for both checkouts: paired, this tree stays at 1.2x the req/s.
    results = [
        result("baseline", 1, 40_000, 20),
        result("hit-memory", 1, 12_000, 80, p99=4.0),
        result("hit-memory before", 1, 10_000, 100, p99=5.0),
        result("baseline", 2, 20_000, 40),
        result("hit-memory before", 2, 5_000, 200, p99=10.0),
        result("hit-memory", 2, 6_000, 150, p99=10.0),
    ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    baseline, now, before = rows
    assert (now.name, now.before, before.name, before.before) == (
        "hit-memory",
        False,
        "hit-memory before",
        True,
    )
    assert now.before_ratio == Spread(1.2, 1.2, 1.2)
    assert now.before_cpu_ratio == Spread(0.775, 0.75, 0.8)
    assert now.before_p99_ratio == Spread(0.9, 0.8, 1.0)
    assert before.ratio == Spread(0.25, 0.25, 0.25)  # the twin still has its x bare
    assert before.before_ratio is None
    assert baseline.before_ratio is None
    # Without the earlier checkout's runs there is nothing to pair with.
    alone = summarise(results[:2], targets.BASELINE, targets.cpu_reference)
    assert alone[1].before_ratio is None


def test_each_service_run_sits_beside_its_twin_in_alternating_order() -> None:
    chosen = [s for s in SCENARIOS if s.name in {"baseline", "plain", "hit-memory", "mixed"}]
    first = [(r.label, r.hot_from) for r in round_runs(chosen, ["motor"], 1, before=True)]
    assert first == [
        ("baseline", 0),
        ("plain", 0),
        ("hit-memory", 0),
        ("hit-memory before", 0),
        ("mixed (motor)", 100),
        # The mixed load writes to its hot set: the earlier checkout gets the next 100 ids.
        ("mixed (motor) before", 200),
    ]
    second = [r.label for r in round_runs(chosen, ["motor"], 2, before=True)]
    assert second[2:] == [
        "hit-memory before",
        "hit-memory",
        "mixed (motor) before",
        "mixed (motor)",
    ]
    alone = [r.label for r in round_runs(chosen, ["motor", "pymongo"], 1, before=False)]
    assert alone == ["baseline", "plain", "hit-memory", "mixed (motor)", "mixed (pymongo)"]


def test_misses_are_judged_against_the_plain_misses() -> None:
    assert targets.cpu_reference("miss (pymongo)") == targets.PLAIN_MISS
    assert targets.cpu_reference("miss (motor) before") == targets.PLAIN_MISS
    assert targets.cpu_reference("plain-miss") == targets.MISS_FLOOR
    assert targets.cpu_reference("hit-redis before") == targets.PLAIN
    assert targets.cpu_reference("plain") == targets.BASELINE
    assert targets.cpu_reference("writes (motor)") == targets.BASELINE
    assert targets.cpu_reference("floor (motor)") is None
    results = [
        result("baseline", 1, 40_000, 20),
        result("floor (motor)", 1, 800, 800),
        result("plain-miss", 1, 850, 850),
        result("miss (motor)", 1, 880, 890),  # 1.047x the plain miss
        result("miss (pymongo)", 1, 1000, 900),  # 1.059x
    ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    targets.judge(rows)
    by_name = {row.name: row for row in rows}
    assert by_name["floor (motor)"].verdicts == []
    assert by_name["plain-miss"].verdicts == []  # a yardstick: compared, not judged
    assert by_name["plain-miss"].cpu_ratio == Spread(1.0625, 1.0625, 1.0625)
    assert by_name["miss (motor)"].verdicts == [
        "PASS CPU ≤1.05x plain miss",
        targets.NOT_JUDGED,
        "PASS 0 errors",
    ]
    assert "MISS CPU ≤1.05x plain miss" in by_name["miss (pymongo)"].verdicts
    assert targets.misses(rows) == ["miss (pymongo): CPU ≤1.05x plain miss"]


def test_floors_against_the_previous_main_use_the_medians_of_paired_rounds() -> None:
    results: list[Result] = []
    # Round 2 is slow for this tree's memory hits alone: one round does not fail a median.
    for number, (memory_rps, memory_cpu) in enumerate([(9_500, 78), (6_000, 120), (9_400, 79)], 1):
        results += [
            result("baseline", number, 40_000, 20),
            result("plain", number, 12_000, 100),
            result("hit-memory", number, memory_rps, memory_cpu, p99=3.0, rss=55.0),
            result("hit-memory before", number, 10_000, 75, p99=2.5, rss=56.0),
            result("hit-redis before", number, 9_000, 100, p99=3.0, rss=53.0),
            result("hit-redis", number, 8_000, 109, p99=4.0, rss=57.0),
        ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    targets.judge(rows)
    by_name = {row.name: row for row in rows}
    memory, redis = by_name["hit-memory"], by_name["hit-redis"]
    assert memory.before_ratio is not None
    assert memory.before_ratio.median == pytest.approx(0.94)
    assert memory.verdicts == [
        "PASS CPU ≤0.80x plain",  # 0.78, 1.20, 0.79: the median 0.79
        "PASS req/s ≥0.90x before",
        "PASS CPU ≤1.10x before",
        "PASS p99 ≤1.25x before",
        "PASS RSS ≤1.05x before",
        "PASS 0 errors",
    ]
    # Redis hits have no CPU floor over the plain app: its cache is in process memory.
    assert redis.verdicts == [
        "MISS req/s ≥0.90x before",
        "PASS CPU ≤1.10x before",
        "MISS p99 ≤1.25x before",
        "MISS RSS ≤1.05x before",
        "PASS 0 errors",
    ]
    assert by_name["hit-memory before"].verdicts == []  # the earlier checkout is not judged
    assert targets.tally(rows) == (
        "Targets met: 8 of 11; missed: hit-redis: req/s ≥0.90x before; "
        "hit-redis: p99 ≤1.25x before; hit-redis: RSS ≤1.05x before."
    )
    text = table(rows, "heading")
    header, rule, *lines = text.splitlines()[2:-2]
    assert "| x before |" in header
    assert "| CPU x before |" in header
    assert {line.count("|") for line in [rule, *lines]} == {header.count("|")}
    assert "| hit-memory | 1 | 9,400 (6,000-9,500) | 0.23 (0.15-0.24) | 0.94 (0.60-0.95) |" in text


def test_without_before_the_floors_against_the_previous_main_are_not_judged() -> None:
    results = [
        result("baseline", 1, 40_000, 20),
        result("plain", 1, 12_000, 100),
        result("hit-memory", 1, 11_000, 90),  # 0.90x the plain app's CPU
        result("writes (motor)", 1, 150, 3_000, errors=3),
    ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    targets.judge(rows)
    assert rows[2].verdicts == ["MISS CPU ≤0.80x plain", targets.NOT_JUDGED, "PASS 0 errors"]
    assert rows[3].verdicts == [targets.NOT_JUDGED, "MISS 0 errors"]
    assert targets.tally(rows) == (
        "Targets met: 1 of 3; missed: hit-memory: CPU ≤0.80x plain; writes (motor): 0 errors; "
        "against the previous main, 2 rows not judged: no --before."
    )
    assert "x before" not in table(rows, "heading")


def test_capacity_for_ten_thousand_reads_at_ninety_percent_hits() -> None:
    plan = capacity.plan(capacity.Costs(hit_us=60, miss_us=877), 10_000, 0.9, 2, 0.7)
    assert plan.cpu_us_per_request == pytest.approx(141.7)
    assert plan.busy_cores == pytest.approx(1.417)
    assert plan.cores == pytest.approx(1.417 / 0.7)
    assert plan.pods == 2
    assert plan.database_ops_per_second == pytest.approx(2_000)


def test_capacity_rounds_pods_up_but_not_past_an_exact_fit() -> None:
    costs = capacity.Costs(hit_us=100, miss_us=100)
    assert capacity.plan(costs, 20_000, 0.5, 2, 0.5).pods == 2  # exactly 4 cores
    assert capacity.plan(costs, 20_001, 0.5, 2, 0.5).pods == 3
    assert capacity.plan(costs, 1, 1.0, 4, 0.7).pods == 1
    assert capacity.plan(costs, 1, 1.0, 4, 0.7).database_ops_per_second == 0
    with pytest.raises(ValueError, match="hit ratio"):
        capacity.plan(costs, 1, 1.5, 2, 0.7)
    with pytest.raises(ValueError, match="utilisation"):
        capacity.plan(costs, 1, 0.5, 2, 0)


def test_capacity_text_has_the_table_and_the_worked_example() -> None:
    text = capacity.render(capacity.Costs(60, 877), 10_000, 0.9, 2, 0.7, "a test")
    assert "| 90% | 142 | 1.42 | 2.02 | 2 | 2,000 |" in text
    assert "| 99% |" in text
    assert "Worked example: 10,000 reads/s at 90% hits is 0.9 x 60 + 0.1 x 877 = 142" in text
    assert "2 pods of 2 workers" in text


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    results = [
        result("baseline", 1, 40_000, 20),
        result("baseline", 2, 38_000, 22),
        result("miss (motor)", 1, 900, 850),
        result("miss (motor)", 2, 850, 880),
        result("baseline", 1, 50_000, 20, workers=2),
    ]
    rows = summarise(results, targets.BASELINE, targets.cpu_reference)
    path = tmp_path / "bench.png"
    chart.draw(rows, path, "a test")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_traced_and_sentinel_rows_have_no_before() -> None:
    """An earlier checkout may have neither tracing nor Sentinel URLs (a6e53c3 has neither):
    these rows are compared within the run."""
    assert targets.cpu_reference("hit-redis-traced") == "hit-redis"
    assert targets.cpu_reference("miss-traced") == "miss (motor)"
    names = {"baseline", "hit-redis", "hit-sentinel", "hit-redis-traced"}
    chosen = [s for s in SCENARIOS if s.name in names]
    labels = [r.label for r in round_runs(chosen, ["motor"], 1, before=True)]
    assert labels == [
        "baseline",
        "hit-redis",
        "hit-redis before",
        "hit-sentinel",
        "hit-redis-traced",
    ]
