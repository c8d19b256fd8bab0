"""The connection cap: how many connections a process holds, and which one makes room.

At the cap (`server.max_connections`, lowered to fit the file limit) a new connection
closes the one idle longest (or still sending its head or body, or being read slowly).
Busy connections are bounded by the in-flight limit, so probes get through a slowloris
flood instead of finding the file limit reached. `connections.Connection` reports to it.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from typing import Protocol

from service.settings.model import ServerSettings

log = logging.getLogger(__name__)

# File descriptors a process needs besides client connections: the MongoDB pool, Redis,
# the metrics port, logs and the interpreter's own. The cap is lowered to fit.
_RESERVED_FDS = 64
_WARN_EVERY_SECONDS = 10.0


def connection_cap(settings: ServerSettings, pool_size: int) -> int:
    """`server.max_connections`, lowered so accepting never hits the file limit (EMFILE
    makes the event loop stop accepting for a second, probes included)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    room = soft - pool_size - _RESERVED_FDS
    cap = min(settings.max_connections, room)
    floor = settings.max_in_flight + 8
    if cap < floor:
        log.warning(
            "file limit %d leaves room for %d connections, fewer than max_in_flight + 8; "
            "using %d: raise the limit (ulimit -n)",
            soft,
            room,
            floor,
        )
        return floor
    if cap < settings.max_connections:
        log.info("at most %d connections: the file limit is %d", cap, soft)
    return cap


class Evictable(Protocol):
    def evict(self) -> None: ...


class ConnectionGuard:
    """The open connections of one process, the idle ones oldest first, and the cap."""

    def __init__(self, cap: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.evicted = 0
        self.refused = 0
        self._open: set[Evictable] = set()
        self._idle: dict[Evictable, None] = {}  # insertion order: idle longest first
        self._clock = clock
        self._warned_at = -_WARN_EVERY_SECONDS

    def admit(self, connection: Evictable) -> bool:
        """Take a new connection; at the cap, close the longest idle one for it."""
        if len(self._open) >= self.cap:
            victim = next(iter(self._idle), None)
            if victim is None:  # every connection is running a request: refuse this one
                self.refused += 1
                self._warn()
                return False
            self.evicted += 1
            self._warn()
            self.release(victim)
            victim.evict()
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def idle(self, connection: Evictable) -> None:
        if connection in self._open:
            self._idle.pop(connection, None)
            self._idle[connection] = None

    def busy(self, connection: Evictable) -> None:
        self._idle.pop(connection, None)

    def release(self, connection: Evictable) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)

    def _warn(self) -> None:
        """One line per interval, not per connection: a flood must not flood the log too."""
        now = self._clock()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "connection cap %d reached: %d idle connections closed, %d new ones refused so far",
                self.cap,
                self.evicted,
                self.refused,
            )

    @property
    def open(self) -> int:
        return len(self._open)
