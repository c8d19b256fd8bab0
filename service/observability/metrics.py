"""Metrics: an aioprometheus registry per app, per-route request series, and GET /metrics.

Several gunicorn workers are several processes, and aioprometheus keeps values in one
process (claws/aioprometheus#89). So, when `metrics.directory` is set (gunicorn sets it),
every update is also written into this worker's memory-mapped sample file in that
directory: a plain memory write, no system call, visible to the other workers at once.
A scrape, answered by whichever worker, sums every file into a fresh registry and
renders that: counters and histograms are exact totals over all workers at that instant.
When a worker dies, gunicorn's `child_exit` hook folds its counters and histograms into
an archive file (totals never go backwards) and drops its gauges and per-process series
(they described a process that is gone); when the master exits, the samples go too (and
the directory, if it made it). Without a directory (`python -m service`, tests) the same
samples live in a dict. Either way a scrape builds an aioprometheus registry from the
samples and renders it, so recording a request costs a few additions and nothing more.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import mmap
import os
import platform
import struct
import tempfile
import threading
from array import array
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, MutableSequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aioprometheus import histogram as aioprometheus_histogram
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.renderer import render

from service.background import every, running
from service.http.responses import name_server
from service.settings.model import SETTINGS
from service.storage.mongo import CommandListener

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A service answering in 1-500 ms: resolution where it lives, and a tail for trouble.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    kind: str  # counter | gauge | histogram
    doc: str
    per_process: bool = False  # describes one live process (labelled by pid under gunicorn)


SPECS = (
    Spec("http_requests_total", "counter", "Requests answered, by method, route and status."),
    Spec("http_request_duration_seconds", "histogram", "Time to answer a request."),
    Spec("http_requests_in_progress", "gauge", "Requests being handled now."),
    Spec("cache_hits_total", "counter", "Response cache hits, by cache."),
    Spec("cache_misses_total", "counter", "Response cache misses, by cache."),
    Spec("cache_errors_total", "counter", "Cache calls that failed or timed out, by cache."),
    Spec("cache_invalidations_total", "counter", "Entries retired by writes, by cache."),
    Spec("cache_evictions_total", "counter", "Entries dropped for the memory bound, by cache."),
    Spec("db_operation_duration_seconds", "histogram", "MongoDB command time, by outcome."),
    Spec("db_retries_total", "counter", "Database calls retried, by operation and error."),
    Spec("process_resident_memory_bytes", "gauge", "Resident memory.", True),
    Spec("process_cpu_seconds_total", "counter", "CPU time used (user + system).", True),
    Spec("process_open_fds", "gauge", "Open file descriptors.", True),
    Spec("process_start_time_seconds", "gauge", "Start time, seconds since the epoch.", True),
)
_SPEC = {spec.name: spec for spec in SPECS}
_CACHE_COUNTERS = {
    "hit": "cache_hits_total",
    "miss": "cache_misses_total",
    "error": "cache_errors_total",
    "invalidation": "cache_invalidations_total",
    "eviction": "cache_evictions_total",
}


# --- the per-worker sample file ----------------------------------------------------------
# Layout: 8-byte header (bytes used), then records: key length (4 bytes), the key (JSON,
# padded to 8), the value (float64). A record is complete before the header counts it.
_HEADER = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_VALUE = struct.Struct("<d")
_INITIAL_SIZE = 1 << 20


def _encode_key(name: str, labels: Mapping[str, str], part: str = "") -> str:
    return json.dumps([name, part, sorted(labels.items())], separators=(",", ":"))


class SampleFile:
    """One process's values, memory-mapped so other processes read them without asking.

    Values are written through a float64 view of the map (one indexed addition per
    update, no struct packing): the file is little-endian, like every platform we run on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = max(os.fstat(self._fd).st_size, _INITIAL_SIZE)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._view = memoryview(self._map).cast("d")
        self.values = cast("MutableSequence[float]", self._view)
        self._slots: dict[str, int] = {}  # key -> index of its value in `values`
        self._used = _HEADER.unpack_from(self._map, 0)[0] or _HEADER.size
        for key, offset in _records(self._map, self._used):
            self._slots[key] = offset // _VALUE.size

    def slot(self, key: str) -> int:
        """Where `key`'s value is in `values` (appended, at zero, when new)."""
        slot = self._slots.get(key)
        return self._append(key) if slot is None else slot

    def add(self, key: str, delta: float) -> None:
        self.values[self.slot(key)] += delta

    def set(self, key: str, value: float) -> None:
        self.values[self.slot(key)] = value

    def _append(self, key: str) -> int:
        encoded = key.encode()
        padded = len(encoded) + (-(len(encoded) + _LENGTH.size) % 8)
        needed = _LENGTH.size + padded + _VALUE.size
        if self._used + needed > len(self._map):
            self._view.release()  # mmap refuses to resize while a view is exported
            self._map.resize(2 * len(self._map) + needed)
            self._view = memoryview(self._map).cast("d")
            self.values = cast("MutableSequence[float]", self._view)
        _LENGTH.pack_into(self._map, self._used, len(encoded))
        start = self._used + _LENGTH.size
        self._map[start : start + len(encoded)] = encoded
        offset = start + padded
        _VALUE.pack_into(self._map, offset, 0.0)
        self._used = offset + _VALUE.size
        _HEADER.pack_into(self._map, 0, self._used)
        self._slots[key] = slot = offset // _VALUE.size
        return slot

    def close(self) -> None:
        self._view.release()
        self._map.close()
        os.close(self._fd)


def _records(buffer: Any, used: int) -> Iterator[tuple[str, int]]:
    position = _HEADER.size
    while position + _LENGTH.size <= used:
        (length,) = _LENGTH.unpack_from(buffer, position)
        start = position + _LENGTH.size
        key = bytes(buffer[start : start + length]).decode()
        offset = start + length + (-(length + _LENGTH.size) % 8)
        yield key, offset
        position = offset + _VALUE.size


def read_samples(path: Path) -> dict[str, float]:
    """Every key and value in a sample file, read without mapping it for writing."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        return {}
    used = min(_HEADER.unpack_from(data, 0)[0], len(data))
    return {key: _VALUE.unpack_from(data, offset)[0] for key, offset in _records(data, used)}


@contextlib.contextmanager
def _directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Scrapes read under a shared lock; folding a dead worker's file takes it exclusively."""
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@dataclass(frozen=True, slots=True)
class SampleDirectory:
    """The directory a gunicorn master shares with its workers, and whether it made it."""

    path: Path
    created: bool


def claim_directory(configured: str) -> SampleDirectory:
    """The configured directory, or a fresh temporary one, emptied of a previous run's samples
    (called once, by the gunicorn master)."""
    if not configured:
        made = tempfile.mkdtemp(prefix="user-service-metrics-")
        return SampleDirectory(Path(made), created=True)
    path = Path(configured)
    created = not path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    _remove_samples(path)
    return SampleDirectory(path, created)


def release_directory(directory: SampleDirectory) -> None:
    """Remove what the server wrote, and the directory too if the server made it: nothing
    is left behind in the temporary directory, run after run."""
    _remove_samples(directory.path)
    (directory.path / ".lock").unlink(missing_ok=True)
    if directory.created:
        with contextlib.suppress(OSError):  # someone else put a file there: leave it
            directory.path.rmdir()


def _remove_samples(directory: Path) -> None:
    for path in directory.glob("*.samples"):
        path.unlink(missing_ok=True)


def retire_worker(directory: Path, pid: int) -> None:
    """Fold a dead worker's counters and histograms into the archive; drop its gauges and
    per-process series (a new worker starts its own)."""
    path = directory / f"worker-{pid}.samples"
    if not path.exists():
        return
    with _directory_lock(directory, exclusive=True):
        archive = SampleFile(directory / "archive.samples")
        try:
            for key, value in read_samples(path).items():
                spec = _SPEC[json.loads(key)[0]]
                if spec.kind != "gauge" and not spec.per_process:
                    archive.add(key, value)
        finally:
            archive.close()
        path.unlink()


def merged_samples(directory: Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    with _directory_lock(directory, exclusive=False):
        for path in directory.glob("*.samples"):
            for key, value in read_samples(path).items():
                totals[key] += value
    return totals


# --- the metrics a process records -------------------------------------------------------


class MemorySamples:
    """The sample store when there is no directory: the same keys, values in an array."""

    def __init__(self) -> None:
        self.values: MutableSequence[float] = array("d")
        self._slots: dict[str, int] = {}

    def slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self.values)
            self.values.append(0.0)
        return slot

    def add(self, key: str, delta: float) -> None:
        self.values[self.slot(key)] += delta

    def set(self, key: str, value: float) -> None:
        self.values[self.slot(key)] = value

    def samples(self) -> dict[str, float]:
        return {key: self.values[slot] for key, slot in self._slots.items()}

    def close(self) -> None:
        return None


class Metrics:
    """The app's metrics. Thread-safe: database events arrive on driver threads.

    Recording is a few additions to a sample store under encoded keys computed once per
    label set: the request path pays no aioprometheus bookkeeping and no JSON encoding.
    A scrape turns the samples into an aioprometheus registry and renders that.
    """

    def __init__(self, directory: Path | None, build_info: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        # Constant per process and the same in every worker: added at render, never summed.
        self._build_info = dict(build_info or {})
        self._pid = str(os.getpid())
        self._store: SampleFile | MemorySamples = (
            SampleFile(directory / f"worker-{self._pid}.samples")
            if directory is not None
            else MemorySamples()
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
            key = self._keys[cache_key] = _encode_key(name, labels, part)
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
        bucket = self._key(name, labels, _BUCKET_PARTS[index])
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

    def render(self, accepts: list[str]) -> tuple[bytes, dict[str, str]]:
        self.sample_process()
        registry = registry_from(self.samples())
        if self._build_info:
            doc = "The running build: version, MongoDB driver, Python (value always 1)."
            Gauge("user_service_build_info", doc, registry=registry).set(self._build_info, 1)
        content, headers = render(registry, accepts)
        return content, dict(headers)

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
        self._store: SampleFile | MemorySamples | None = None  # what the slots point into
        self._in_progress = 0
        self._by_status: dict[int, _StatusSlots] = {}

    def _bind(self, store: SampleFile | MemorySamples) -> None:
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

    def _slots(self, store: SampleFile | MemorySamples, status: int) -> _StatusSlots:
        name = "http_request_duration_seconds"
        key = self._metrics._key
        return _StatusSlots(
            store.slot(key("http_requests_total", {**self._labels, "status": str(status)})),
            tuple(store.slot(key(name, self._labels, part)) for part in _BUCKET_PARTS),
            store.slot(key(name, self._labels, "sum")),
        )


_BUCKET_PARTS = (*(str(bound) for bound in LATENCY_BUCKETS), "+Inf")


def _new_collectors(registry: Registry) -> dict[str, Any]:
    collectors: dict[str, Any] = {}
    for spec in SPECS:
        if spec.kind == "counter":
            collectors[spec.name] = Counter(spec.name, spec.doc, registry=registry)
        elif spec.kind == "gauge":
            collectors[spec.name] = Gauge(spec.name, spec.doc, registry=registry)
        else:
            collectors[spec.name] = Histogram(
                spec.name, spec.doc, registry=registry, buckets=LATENCY_BUCKETS
            )
    return collectors


def registry_from(samples: Mapping[str, float]) -> Registry:
    """An aioprometheus registry holding these samples.

    A histogram is stored as one count per bucket (each observation in one) and a sum;
    here the buckets become cumulative and the +Inf bucket, which is the count, their
    total. Deriving the count keeps `le="+Inf"` == `_count` even when a scrape reads a
    file between a worker's additions.
    """
    registry = Registry()
    collectors = _new_collectors(registry)
    histograms: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for key, value in samples.items():
        name, part, pairs = json.loads(key)
        if _SPEC[name].kind == "histogram":
            histograms[(name, json.dumps(pairs))][part] = value
        else:
            collectors[name].set(dict(pairs), value)
    for (name, pairs), parts in histograms.items():
        merged = aioprometheus_histogram.Histogram(*LATENCY_BUCKETS)
        running = 0
        for bound, part in zip(merged.buckets, _BUCKET_PARTS, strict=True):
            running += int(parts.get(part, 0.0))
            merged.buckets[bound] = running
        merged.observations = running
        merged.sum = parts.get("sum", 0.0)
        collectors[name].set_value(dict(json.loads(pairs)), merged)
    return registry


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_stats() -> dict[str, float]:
    """This process, read from /proc (Linux), named as Prometheus's process collector does."""
    with open("/proc/self/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    with open("/proc/stat", encoding="ascii") as handle:
        boot = next(float(line.split()[1]) for line in handle if line.startswith("btime"))
    return {
        "process_cpu_seconds_total": (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
        "process_resident_memory_bytes": float(int(fields[21]) * _PAGE_SIZE),
        "process_start_time_seconds": boot + int(fields[19]) / _CLOCK_TICKS,
        "process_open_fds": float(len(os.listdir("/proc/self/fd"))),
    }


class DatabaseTimer(CommandListener):
    """Times every MongoDB command through the driver's monitoring events."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def started(self, event: Any) -> None:
        return None

    def succeeded(self, event: Any) -> None:
        self._metrics.db_operation(event.command_name, "ok", event.duration_micros / 1e6)

    def failed(self, event: Any) -> None:
        self._metrics.db_operation(event.command_name, "error", event.duration_micros / 1e6)


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    content, headers = request.app[METRICS].render(request.headers.getall("Accept", []))
    return web.Response(body=content, headers=headers)


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


async def metrics_server_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: serve GET /metrics on `metrics.port` when it is set, apart from the API.

    Every gunicorn worker binds the port with SO_REUSEPORT; whichever the kernel picks
    answers for all of them, as on the API port.
    """
    settings = app[SETTINGS]
    if settings.metrics.port == 0:
        yield
        return
    scrape = web.Application()
    scrape[METRICS] = app[METRICS]
    scrape.router.add_get("/metrics", metrics_handler)
    scrape.on_response_prepare.append(name_server)
    runner = web.AppRunner(scrape, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.metrics.port, reuse_port=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    yield
    await runner.cleanup()


def create_metrics(app: web.Application) -> Metrics:
    settings = app[SETTINGS]
    directory = settings.metrics.directory
    build_info = {
        "version": version("user-service"),
        "driver": settings.mongo.driver,
        "python": platform.python_version(),
    }
    return Metrics(Path(directory) if directory else None, build_info)
