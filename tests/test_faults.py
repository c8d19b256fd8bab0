"""The fault run, one short cycle: stops, stalls and restarts of SecantusDB and Redis under
clients retrying idempotent writes (`make chaos` runs the same for minutes)."""

from __future__ import annotations

import pytest

from bench.chaos import render, run
from service.settings.model import MongoDriver


@pytest.mark.slow
async def test_no_acknowledged_write_is_lost_doubled_stale_or_stuck(
    mongo_driver: MongoDriver,
) -> None:
    """Once per driver: the instances run with `MONGO_DRIVER` set to it."""
    report = await run(seconds=10, clients=4, calm=2.0, driver=mongo_driver)
    print(render(report, details=True))
    assert report.faults == {"mongo-stop": 1, "mongo-stall": 1, "redis-stop": 1, "both-stop": 1}
    assert report.failures() == []
