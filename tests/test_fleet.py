"""A fleet behind a real balancer: three gunicorn instances behind HAProxy, rolled one by one
with SIGTERM under load, judged by the clients, the database and a real Prometheus.

The harness lives in bench/fleet.py (shared with `make fleet`, which runs longer); it
terminates an instance as Kubernetes terminates a pod (out of the balancer's rotation, the
preStop sleep, SIGTERM), with the timings from the Kubernetes manifests. It runs the
default driver (Motor) only: its subject is the balancer, the termination sequence and the
cache tokens, and the drivers' own behaviour through restarts and faults is tested per
driver elsewhere (test_faults, test_resilience, test_shutdown).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import aiohttp
import pytest

from bench.fleet import Fleet, Load, Tally, rollout_budget
from service.observability.metric_specs import LATENCY_BUCKETS
from tests.helpers.otlp import SERVER, otlp_receiver
from tests.helpers.servers import MongoServer, RedisServer
from tests.helpers.tools import require_command

pytestmark = [pytest.mark.slow, pytest.mark.redis]


async def test_a_rolling_restart_under_load_fails_nothing_loses_nothing_serves_nothing_stale(
    mongo_server: MongoServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    haproxy = require_command("haproxy", "haproxy")
    require_command("prometheus", "prometheus")
    budget = rollout_budget()
    fleet = Fleet(tmp_path, mongo_server.url, redis_server.url, budget, haproxy)
    # Few users, many clients: concurrent reads of one user meet on one worker, where the
    # stale reads were (a load begun before a write, shared with a read sent after it).
    report = await fleet.run(clients=12, users=3, rounds=1, settle=3.0)
    figures = report.figures()
    print(json.dumps(figures, indent=1))

    assert figures["failed"] == 0, figures["failures_sample"]
    assert figures["stale_reads"] == 0, figures["stale_sample"]
    assert figures["reads_checked"] > 100
    assert figures["writes_acknowledged"] == figures["orders_stored"] > 50
    assert figures["stored_matches_acknowledged"]

    assert [restart.instance for restart in report.restarts] == ["s1", "s2", "s3"]
    for restart in report.restarts:
        assert restart.exit_code == 0, restart
        # Out of rotation before SIGTERM; SIGTERM after the preStop sleep.
        assert restart.out_after_seconds < budget.pre_stop_seconds <= restart.exited_after_seconds
    assert sorted(report.out_of_rotation) == ["s1", "s2", "s3"]
    assert all(len(spans) == 1 for spans in report.out_of_rotation.values()), report.out_of_rotation

    prometheus = figures["prometheus"]
    # Exactly what the clients counted, by method, route and status, across the restarts.
    assert prometheus["totals_match"], prometheus["totals_missing"]
    # Split at each instance's restarts, no counter ever went back within one process; and
    # resets() saw at most one per restart of the series' own instance, none elsewhere.
    assert prometheus["backwards_within_a_process"] == []
    assert prometheus["resets_beyond_own_restarts"] == 0, prometheus
    assert set(prometheus["restarts_by_instance"].values()) == {1}
    # The fleet's p99 and rate as PromQL estimates them over the three targets: the p99 in
    # the clients' p99 bucket or a neighbour (rate() extrapolates each series at the window's
    # edges, which moves the estimate's rank by a fraction of a percent), the rate at mid-load
    # near the clients' own count over the same seconds.
    p99 = prometheus["p99_seconds"]
    assert p99 is not None
    assert 0 < p99 < LATENCY_BUCKETS[-1], prometheus
    client_p99 = figures["client_p99_ms"] / 1000
    spread = bisect.bisect_left(LATENCY_BUCKETS, p99) - bisect.bisect_left(
        LATENCY_BUCKETS, client_p99
    )
    assert abs(spread) <= 1, (p99, client_p99)
    rate, counted = prometheus["rate_rps_mid_load"], prometheus["client_rps_mid_load"]
    assert rate is not None
    assert abs(rate - counted) <= 0.25 * counted, (rate, counted)
    # The buckets themselves, exact across the restarts: the server's time for a request is
    # part of the client's, so at every bound the server counted at least as many requests
    # as fast as that as the clients did (and, at +Inf, exactly as many).
    buckets = {float(le): count for le, count in prometheus["buckets"].items()}
    latencies = sorted(report.tally.latencies)
    assert buckets[float("inf")] == len(latencies), buckets
    for bound in LATENCY_BUCKETS:
        as_fast = bisect.bisect_right(latencies, bound)
        assert buckets.get(bound, 0.0) >= as_fast, (bound, buckets, as_fast)


async def test_a_traceparent_sent_to_the_front_reaches_an_instances_span(
    mongo_server: MongoServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """HAProxy passes W3C trace context on: the instance's SERVER span is the caller's child.
    The fleet samples only what a caller's traceparent asks for: HAProxy's health checks
    leave no spans."""
    haproxy = require_command("haproxy", "haproxy")
    require_command("prometheus", "prometheus")
    with otlp_receiver() as receiver:
        fleet = Fleet(tmp_path, mongo_server.url, redis_server.url, rollout_budget(), haproxy,
                      otlp_endpoint=receiver.endpoint)  # fmt: skip
        async with fleet.running():
            load = Load(fleet.haproxy.base, [], Tally())
            async with aiohttp.ClientSession() as http:
                await load.create_users(http, 1)
                traceparent = await load.probe_trace(http)
            _, trace_id, parent_id, _ = traceparent.split("-")
            receiver.wait_for(lambda r: any(s.kind == SERVER for s in r.trace(trace_id)))
    (span,) = [span for span in receiver.trace(trace_id) if span.kind == SERVER]
    assert span.parent_span_id == parent_id
    assert span.name == "GET /users/{user_id}"
    assert all(other.trace_id == trace_id for other in receiver.spans if other.kind == SERVER)
