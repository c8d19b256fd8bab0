"""Recording metrics: what the request pipeline, the cache, the retry policy and the driver
call, each call a few additions to this process's sample store (`samples`). Nothing here
builds an aioprometheus object: that waits for a scrape (`scrape`)."""

from __future__ import annotations

import bisect
import os
import platform
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from aiohttp import web

from service.background import every, running
from service.observability.metric_specs import BUCKET_PARTS, LATENCY_BUCKETS
from service.observability.process_stats import process_stats
from service.observability.samples import (
    MemorySamples,
    SampleFile,
    SampleStore,
    encode_key,
    merged_samples,
    worker_file,
)
from service.settings.model import SETTINGS

_CACHE_COUNTERS = {
    "hit": "cache_hits_total",
    "miss": "cache_misses_total",
    "error": "cache_errors_total",
    "invalidation": "cache_invalidations_total",
    "eviction": "cache_evictions_total",
}


class Metrics:
    """The app's metrics. Thread-safe: database events arrive on driver threads.

    Keys are encoded once per label set and request series resolve their slots once, so
    the request path pays no aioprometheus bookkeeping and no JSON encoding.
    """

    def __init__(self, directory: Path | None, build_info: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        # Constant per process and the same in every worker: added at render, never summed.
        self.build_info = dict(build_info or {})
        pid = os.getpid()
        self._pid = str(pid)
        self._store: SampleStore = (
            SampleFile(worker_file(directory, pid)) if directory is not None else MemorySamples()
        )
        self.directory = directory
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...], str], str] = {}
        self._series: dict[tuple[str, str], RequestSeries] = {}
        # (metric, cache) -> key, for cache events: no labels dict per call.
        self._hot_keys: dict[tuple[str, str], str] = {}

    def _key(self, name: str, labels: dict[str, str], part: str = "") -> str:
        cache_key = (name, tuple(labels.items()), part)
        key = self._keys.get(cache_key)
        if key is None:
            key = self._keys[cache_key] = encode_key(name, labels, part)
        return key

    def _count(self, name: str, labels: dict[str, str], delta: float = 1.0) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._store.add(key, delta)

    def _set(self, name: str, labels: dict[str, str], value: float) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._store.set(key, value)

    def _observe(self, name: str, labels: dict[str, str], value: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, value)
        bucket = self._key(name, labels, BUCKET_PARTS[index])
        total = self._key(name, labels, "sum")
        with self._lock:
            self._store.add(bucket, 1.0)
            self._store.add(total, value)

    def series(self, method: str, route: str) -> RequestSeries:
        """One method and route's request metrics; the pipeline resolves it once per route."""
        found = self._series.get((method, route))
        if found is None:
            found = self._series[(method, route)] = RequestSeries(self, method, route)
        return found

    def request_started(self, method: str, route: str) -> None:
        self.series(method, route).started()

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.series(method, route).finished(status, seconds)

    def cache_event(self, cache: str, event: str, n: int = 1) -> None:
        """Once per cached read: the key is looked up, not built."""
        key = self._hot_keys.get((event, cache))
        if key is None:
            key = self._key(_CACHE_COUNTERS[event], {"cache": cache})
            self._hot_keys[(event, cache)] = key
        with self._lock:
            self._store.add(key, n)

    def retry(self, operation: str, error_class: str) -> None:
        self._count("db_retries_total", {"operation": operation, "error_class": error_class})

    def db_operation(self, operation: str, outcome: str, seconds: float) -> None:
        labels = {"operation": operation, "outcome": outcome}
        self._observe("db_operation_duration_seconds", labels, seconds)

    def sample_process(self) -> None:
        labels = {"pid": self._pid} if self.directory is not None else {}
        for name, value in process_stats().items():
            self._set(name, labels, value)

    def samples(self) -> dict[str, float]:
        """Every sample this scrape should show: all workers' when there is a directory."""
        if self.directory is not None:
            return merged_samples(self.directory)
        with self._lock:
            return self._store.samples() if isinstance(self._store, MemorySamples) else {}

    def close(self) -> None:
        """Close the sample file; events that arrive later (driver threads finishing a
        command after shutdown) land in a dict nobody reads instead of a closed map."""
        with self._lock:
            self._store.close()
            self._store = MemorySamples()


@dataclass(frozen=True, slots=True)
class _StatusSlots:
    total: int
    buckets: tuple[int, ...]  # one per LATENCY_BUCKETS bound, then +Inf
    sum: int


class RequestSeries:
    """The request metrics of one method and route, at slots of the sample store resolved
    once (per status on first sight): recording a request is a few indexed additions
    under one lock, with no key built or looked up."""

    __slots__ = ("_by_status", "_in_progress", "_labels", "_metrics", "_store")

    def __init__(self, metrics: Metrics, method: str, route: str) -> None:
        self._metrics = metrics
        self._labels = {"method": method, "route": route}
        self._store: SampleStore | None = None  # what the slots point into
        self._in_progress = 0
        self._by_status: dict[int, _StatusSlots] = {}

    def _bind(self, store: SampleStore) -> None:
        """Resolve the slots in `store` (the metrics swap theirs when closed)."""
        self._store = store
        self._in_progress = store.slot(
            self._metrics._key("http_requests_in_progress", self._labels)
        )
        self._by_status = {}

    def started(self) -> None:
        metrics = self._metrics
        with metrics._lock:
            store = metrics._store
            if store is not self._store:
                self._bind(store)
            store.values[self._in_progress] += 1.0

    def finished(self, status: int, seconds: float) -> None:
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        metrics = self._metrics
        with metrics._lock:
            store = metrics._store
            if store is not self._store:
                self._bind(store)
            slots = self._by_status.get(status)
            if slots is None:
                slots = self._by_status[status] = self._slots(store, status)
            values = store.values
            values[self._in_progress] -= 1.0
            values[slots.total] += 1.0
            values[slots.buckets[bucket]] += 1.0
            values[slots.sum] += seconds

    def _slots(self, store: SampleStore, status: int) -> _StatusSlots:
        name = "http_request_duration_seconds"
        key = self._metrics._key
        return _StatusSlots(
            store.slot(key("http_requests_total", {**self._labels, "status": str(status)})),
            tuple(store.slot(key(name, self._labels, part)) for part in BUCKET_PARTS),
            store.slot(key(name, self._labels, "sum")),
        )


METRICS = web.AppKey("metrics", Metrics)


def create_metrics(app: web.Application) -> Metrics:
    settings = app[SETTINGS]
    directory = settings.metrics.directory
    build_info = {
        "version": version("user-service"),
        "driver": settings.mongo.driver,
        "python": platform.python_version(),
    }
    return Metrics(Path(directory) if directory else None, build_info)


PROCESS_SAMPLE_SECONDS = 5.0


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: under gunicorn, keep this worker's process gauges fresh for scrapes
    answered by its siblings; close the sample file at the end."""
    metrics = app[METRICS]
    if metrics.directory is None:
        yield
    else:
        metrics.sample_process()
        async with running(every(PROCESS_SAMPLE_SECONDS, metrics.sample_process), "process"):
            yield
    metrics.close()
