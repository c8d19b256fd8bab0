"""OpenTelemetry traces: the service under gunicorn exports to a real OTLP/HTTP receiver,
called by a real client that sends W3C `traceparent`, on both drivers, with Redis as cache."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from service.settings.loading import load_settings, tracing_enabled
from tests.helpers.http import until_ready
from tests.helpers.mongo import FailPoint
from tests.helpers.otlp import CLIENT, ERROR, SERVER, OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.helpers.servers import RedisServer
from tests.helpers.service import Service, running_service


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


def traced_env(test_env: dict[str, str], receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {**test_env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "user-service-under-test", "OTEL_BSP_SCHEDULE_DELAY": "50",
            "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "ACCESS_LOG": "true", **extra}  # fmt: skip


def traceparent() -> tuple[str, str, str]:
    """A caller's trace id, its span id and the header that carries them."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def server_span(receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    (span,) = [span for span in receiver.trace(trace_id) if span.kind == SERVER]
    return span


def children(receiver: OtlpReceiver, parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in receiver.trace(parent.trace_id) if s.parent_span_id == parent.span_id]


def has_server_span(trace_id: str) -> Callable[[OtlpReceiver], bool]:
    return lambda r: any(s.kind == SERVER for s in r.trace(trace_id))


def log_lines(service: Service, logger: str, trace_id: str) -> list[dict[str, object]]:
    """The JSON log lines of `logger` that carry `trace_id`."""
    entries = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("logger") == logger and e.get("trace_id") == trace_id]


async def test_a_miss_and_a_hit_make_one_trace_each_below_the_callers_span(
    test_env: dict[str, str], receiver: OtlpReceiver, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = traced_env(test_env, receiver, CACHE_BACKEND="redis", REDIS_URL=redis_server.url,
                     CACHE_NAMESPACE=f"trace-{uuid.uuid4().hex[:8]}")  # fmt: skip
    with running_service("gunicorn", env, tmp_path / "service.log") as service:
        async with aiohttp.ClientSession(service.base) as http:
            await until_ready(http, service.base, timeout=30)
            created = await http.post("/users", json={"name": "T", "email": "t@example.com"})
            user_id = (await created.json())["id"]
            miss_trace, caller, header = traceparent()
            caller_headers = {"traceparent": header, "tracestate": "vendor=1"}
            miss = await http.get(f"/users/{user_id}", headers=caller_headers)
            assert miss.status == 200
            hit_trace, _, hit_header = traceparent()
            hit = await http.get(f"/users/{user_id}", headers={"traceparent": hit_header})
            assert hit.status == 200
            receiver.wait_for(has_server_span(miss_trace))
            receiver.wait_for(has_server_span(hit_trace))
            receiver.wait_for(lambda r: len(r.trace(miss_trace)) >= 5)  # + 2 finds, 2 Redis

        span = server_span(receiver, miss_trace)
        assert span.parent_span_id == caller
        assert span.trace_state == "vendor=1"
        assert span.name == "GET /users/{user_id}"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.route"] == "/users/{user_id}"
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["url.path"] == f"/users/{user_id}"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert "error.type" not in span.attributes
        assert span.status != ERROR
        assert span.resource["service.name"] == "user-service-under-test"
        assert receiver.content_types == {"application/x-protobuf"}

        below = children(receiver, span)
        database = sorted((s for s in below if s.attributes.get("db.system") == "mongodb"),
                          key=lambda s: s.name)  # fmt: skip
        assert [s.name for s in database] == ["find orders", "find users"]
        for child in database:
            assert child.kind == CLIENT
            assert child.attributes["db.system.name"] == "mongodb"
            assert child.attributes["db.operation.name"] == "find"
            assert child.attributes["db.namespace"] == test_env["MONGO_DB"]
            # The operation and the collection, never the query's values.
            assert user_id not in json.dumps(child.attributes)
        cache = sorted(s.name for s in below if s.attributes.get("db.system.name") == "redis")
        assert cache == ["EVALSHA", "SET"]  # the lookup that missed, the store after

        hit_span = server_span(receiver, hit_trace)
        hit_below = children(receiver, hit_span)
        assert [s.name for s in hit_below] == ["EVALSHA"]  # no database span on a hit
        assert [s for s in receiver.trace(hit_trace) if s is not hit_span] == hit_below

    # The access log is written in batches: read once the service has stopped.
    (line,) = log_lines(service, "service.access", miss_trace)
    assert line["span_id"] == span.span_id
    assert line["route"] == "/users/{user_id}"
    assert line["request_id"] == miss.headers["X-Request-ID"]


async def test_retries_are_spans_of_their_own_and_a_deadline_503_is_an_error(
    test_env: dict[str, str], receiver: OtlpReceiver, fail_point: FailPoint, tmp_path: Path
) -> None:
    env = traced_env(test_env, receiver, REQUEST_DEADLINE_SECONDS="2")
    app_name = load_settings(test_env).mongo.app_name
    with running_service("gunicorn", env, tmp_path / "service.log") as service:
        async with aiohttp.ClientSession(service.base) as http:
            await until_ready(http, service.base, timeout=30)
            created = await http.post("/users", json={"name": "R", "email": "r@example.com"})
            user_id = (await created.json())["id"]
            # A transient error (SocketException) on the first find: retried once.
            await fail_point.arm({"times": 1}, failCommands=["find"], errorCode=9001,
                                 appName=app_name)  # fmt: skip
            retried_trace, _, header = traceparent()
            answer = await http.get(f"/users/{user_id}/orders", headers={"traceparent": header})
            assert answer.status == 200
            receiver.wait_for(has_server_span(retried_trace))
            receiver.wait_for(lambda r: len(r.trace(retried_trace)) >= 4)

            await fail_point.arm("alwaysOn", failCommands=["find"], blockConnection=True,
                                 blockTimeMS=4000, appName=app_name)  # fmt: skip
            late_trace, _, header = traceparent()
            late = await http.get(f"/users/{user_id}", headers={"traceparent": header})
            assert late.status == 503
            await fail_point.off()
            receiver.wait_for(has_server_span(late_trace))

    span = server_span(receiver, retried_trace)
    finds = [s for s in children(receiver, span) if s.attributes.get("db.operation.name") == "find"]
    assert sorted(s.status == ERROR for s in finds).count(True) == 1  # the failed try
    assert len(finds) == 3  # users: failed, then retried; orders: once
    assert "db.retry" in span.events
    (warning,) = log_lines(service, "service.storage.retry", retried_trace)
    assert warning["span_id"] == span.span_id
    assert warning["request_id"] != "-"

    late_span = server_span(receiver, late_trace)
    assert late_span.status == ERROR
    assert late_span.attributes["http.response.status_code"] == 503
    assert late_span.attributes["error.type"] == "503"


@pytest.mark.one_driver
async def test_a_worker_flushes_its_last_spans_when_it_stops(
    test_env: dict[str, str], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The batch would wait a minute; stopping the worker sends it."""
    env = traced_env(test_env, receiver, OTEL_BSP_SCHEDULE_DELAY="60000")
    trace_id, _, header = traceparent()
    with running_service("gunicorn", env, tmp_path / "service.log") as service:
        async with aiohttp.ClientSession(service.base) as http:
            await until_ready(http, service.base, timeout=30)
            assert (await http.get("/users/nobody", headers={"traceparent": header})).status == 404
        assert receiver.trace(trace_id) == []
    span = server_span(receiver, trace_id)
    assert span.attributes["http.response.status_code"] == 404
    assert span.status != ERROR


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled() -> None:
    endpoint = "http://collector:4318"
    assert not tracing_enabled({})
    assert not tracing_enabled({"OTEL_SERVICE_NAME": "x"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces"})
    assert not tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                "OTEL_SDK_DISABLED": "TRUE"})  # fmt: skip
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                            "OTEL_SDK_DISABLED": "false"})  # fmt: skip
