"""bench/results/bench.png: requests/s and CPU µs/request per target, 1 worker.

Bars are the medians of the rounds, whiskers the lowest and highest round. Both axes are
logarithmic: bare aiohttp answers ~40 times more requests than a read that goes to the
database, and a linear axis would flatten every miss row to nothing. Grey bars are the
yardsticks (bare aiohttp, the plain app, the two driver floors), blue ones the service
(light blue: the --before checkout's); a hatched bar had errors in some round (quick 503s
make it look faster and cheaper than it is).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from bench.summary import Row, Spread
from bench.targets import REFERENCES

_SERVICE, _REFERENCE, _BEFORE = "#2f6db5", "#9a9a9a", "#a9c6ea"


def _panel(
    figure: Figure,
    position: int,
    rows: Sequence[Row],
    spreads: Sequence[Spread],
    title: str,
    digits: int,
) -> None:
    axes = figure.add_subplot(1, 2, position)
    medians = [s.median for s in spreads]
    whiskers = [[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
    colours = [
        _BEFORE if row.before else _REFERENCE if row.scenario in REFERENCES else _SERVICE
        for row in rows
    ]
    places = list(range(len(rows)))
    bars = axes.barh(places, medians, color=colours, xerr=whiskers, capsize=3, ecolor="#333333")
    for bar, row in zip(bars, rows, strict=True):
        if row.errors:  # quick 503s flatter both figures: say so on the bar
            bar.set_hatch("//")
            bar.set_edgecolor("white")
    axes.set_xscale("log")
    axes.set_yticks(places, [row.name for row in rows] if position == 1 else [])
    axes.invert_yaxis()  # the table's order, top to bottom
    axes.set_title(title, fontsize=11)
    axes.grid(axis="x", which="major", color="#dddddd")
    axes.set_axisbelow(True)
    for place, spread, row in zip(places, spreads, rows, strict=True):
        errors = f" ({row.errors:,} errors)" if row.errors else ""
        axes.annotate(
            f"{spread.median:,.{digits}f}{errors}",
            (spread.high, place),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    # Room on the right for the longest label ("4,236 (25 errors)") on a log axis.
    axes.set_xlim(min(s.low for s in spreads) / 2, max(s.high for s in spreads) * 12)


def draw(rows: Sequence[Row], path: Path, subtitle: str) -> None:
    """Both panels side by side, the 1-worker rows in the table's order."""
    chosen = [row for row in rows if row.workers == 1]
    figure = Figure(figsize=(11, 0.42 * len(chosen) + 2.2), layout="constrained")
    figure.suptitle("make bench, 1 worker: bars are the median of the rounds, whiskers min-max")
    key = "Grey: bare aiohttp, the plain app, the driver floors (bench/). Blue: the service;"
    key += " light blue: the service of the --before checkout. Hatched: errors."
    figure.supxlabel(f"{key}\n{textwrap.fill(subtitle, 150)}", fontsize=8, color="#444444")
    throughput = [row.requests_per_second for row in chosen]
    cpu = [row.cpu_us_per_request for row in chosen]
    _panel(figure, 1, chosen, throughput, "requests/s (higher is better)", 0)
    _panel(figure, 2, chosen, cpu, "CPU µs per request (lower is better)", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
