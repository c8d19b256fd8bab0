"""This process's resource use, for the process_* metrics."""

from __future__ import annotations

import os

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
