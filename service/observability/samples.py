"""Where metric values live: one sample store per process, shared across gunicorn workers.

aioprometheus keeps values in one process and has no multi-process mode
(claws/aioprometheus#89), and several gunicorn workers are several processes; its
collectors also cost more per update than the request path can spare. So values are kept
here, by hand: when `metrics.directory` is set (gunicorn sets it), each worker writes
into its own memory-mapped sample file in that directory (a plain memory write, no system
call, visible to the other workers at once), and a scrape, answered by whichever worker,
sums every file (`merged_samples`): exact totals over all workers at that instant.

When a worker dies, gunicorn's `child_exit` hook folds its counters and histograms into
an archive file (totals never go backwards) and drops its gauges and per-process series
(they described a process that is gone); when the master exits, the samples go too (and
the directory, if it made it). Without a directory (`python -m service`, tests) the same
keys and values live in `MemorySamples`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import struct
import tempfile
from array import array
from collections import defaultdict
from collections.abc import Iterator, Mapping, MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from service.observability.metric_specs import SPEC_BY_NAME

Labels = tuple[tuple[str, str], ...]


def encode_key(name: str, labels: Mapping[str, str], part: str = "") -> str:
    """A sample's key: the metric, the part (a histogram's bucket or "sum") and the labels."""
    return json.dumps([name, part, sorted(labels.items())], separators=(",", ":"))


def decode_key(key: str) -> tuple[str, str, Labels]:
    """`encode_key`'s name, part and labels (sorted)."""
    name, part, pairs = json.loads(key)
    return name, part, tuple((label, value) for label, value in pairs)


# --- the per-worker sample file ----------------------------------------------------------
# Layout: 8-byte header (bytes used), then records: key length (4 bytes), the key (JSON,
# padded to 8), the value (float64). A record is complete before the header counts it.
_HEADER = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_VALUE = struct.Struct("<d")
_INITIAL_SIZE = 1 << 20


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


SampleStore = SampleFile | MemorySamples


# --- the directory gunicorn's master shares with its workers ---------------------------


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


def worker_file(directory: Path, pid: int) -> Path:
    return directory / f"worker-{pid}.samples"


def retire_worker(directory: Path, pid: int) -> None:
    """Fold a dead worker's counters and histograms into the archive; drop its gauges and
    per-process series (a new worker starts its own)."""
    path = worker_file(directory, pid)
    if not path.exists():
        return
    with _directory_lock(directory, exclusive=True):
        archive = SampleFile(directory / "archive.samples")
        try:
            for key, value in read_samples(path).items():
                spec = SPEC_BY_NAME[decode_key(key)[0]]
                if spec.kind != "gauge" and not spec.per_process:
                    archive.add(key, value)
        finally:
            archive.close()
        path.unlink()


def merged_samples(directory: Path) -> dict[str, float]:
    """Every file's samples, summed: the live workers', and the archive of the dead ones'."""
    totals: dict[str, float] = defaultdict(float)
    with _directory_lock(directory, exclusive=False):
        for path in directory.glob("*.samples"):
            for key, value in read_samples(path).items():
                totals[key] += value
    return totals
