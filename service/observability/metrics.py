"""Recording metrics: what the request middleware, the cache, the retry policy and the driver
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
    "primary_change": "cache_primary_changes_total",
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
        """One method and route's request metrics; the middleware resolves it once per route."""
        found = self._series.get((method, route))
        if found is None:
            found = RequestSeries(self._lock, self._store, method, route)
            self._series[(method, route)] = found
        return found

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
            for series in self._series.values():
                series.bind(self._store)


@dataclass(frozen=True, slots=True)
class _StatusSlots:
    total: int
    buckets: tuple[int, ...]  # one per LATENCY_BUCKETS bound, then +Inf
    sum: int


class RequestSeries:
    """The request metrics of one method and route, at slots of the sample store resolved
    once (on first use, per status on first sight: a route never requested shows no
    series): recording a request is a few indexed additions under the metrics' lock, with
    no key built or looked up.

    Made by `Metrics.series`, which binds it to its new store when it swaps its own.
    """

    __slots__ = ("_by_status", "_in_progress", "_in_progress_key", "_labels", "_lock", "_store")

    def __init__(self, lock: threading.Lock, store: SampleStore, method: str, route: str) -> None:
        self._lock = lock  # the metrics' lock: it guards the store and these slots
        self._labels = {"method": method, "route": route}
        self._in_progress_key = encode_key("http_requests_in_progress", self._labels)
        self.bind(store)

    def bind(self, store: SampleStore) -> None:
        """Record into `store` from now on; the caller holds the lock."""
        self._store = store
        self._in_progress: int | None = None
        self._by_status: dict[int, _StatusSlots] = {}

    def started(self) -> None:
        with self._lock:
            slot = self._in_progress
            if slot is None:
                slot = self._in_progress = self._store.slot(self._in_progress_key)
            self._store.values[slot] += 1.0

    def finished(self, status: int, seconds: float) -> None:
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            store = self._store
            in_progress = self._in_progress
            if in_progress is None:  # the store was swapped since this request started
                in_progress = self._in_progress = store.slot(self._in_progress_key)
            slots = self._by_status.get(status)
            if slots is None:
                slots = self._by_status[status] = self._slots(status)
            values = store.values
            values[in_progress] -= 1.0
            values[slots.total] += 1.0
            values[slots.buckets[bucket]] += 1.0
            values[slots.sum] += seconds

    def _slots(self, status: int) -> _StatusSlots:
        name = "http_request_duration_seconds"
        slot, labels = self._store.slot, self._labels
        return _StatusSlots(
            slot(encode_key("http_requests_total", {**labels, "status": str(status)})),
            tuple(slot(encode_key(name, labels, part)) for part in BUCKET_PARTS),
            slot(encode_key(name, labels, "sum")),
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
