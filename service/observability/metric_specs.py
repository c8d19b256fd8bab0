"""What the service measures: every metric's name, type and help, the latency buckets, and
the few label values that keep label sets bounded."""

from __future__ import annotations

from dataclasses import dataclass

# Methods outside this set are counted as "OTHER": a client must not mint label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label (and access-log route) of a request that matched no route.
UNMATCHED = "<unmatched>"
# A service answering in 1-500 ms: resolution where it lives, and a tail for trouble.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# How a histogram's bucket is named in its sample key, one per bound, then +Inf.
BUCKET_PARTS = (*(str(bound) for bound in LATENCY_BUCKETS), "+Inf")


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
    Spec("cache_primary_changes_total", "counter", "Redis primaries Sentinel replaced, by cache."),
    Spec("db_operation_duration_seconds", "histogram", "MongoDB command time, by outcome."),
    Spec("db_retries_total", "counter", "Database calls retried, by operation and error."),
    Spec("process_resident_memory_bytes", "gauge", "Resident memory.", True),
    Spec("process_cpu_seconds_total", "counter", "CPU time used (user + system).", True),
    Spec("process_open_fds", "gauge", "Open file descriptors.", True),
    Spec("process_start_time_seconds", "gauge", "Start time, seconds since the epoch.", True),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
