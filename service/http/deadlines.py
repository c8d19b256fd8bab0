"""The per-request deadline: every request is answered in time, 503 + Retry-After if not."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from service.background import every, running
from service.storage.retry import deadline_var


class Deadlines:
    """Every request is answered within the deadline: 503 + Retry-After when it runs over.

    One watchdog task sweeps the requests in flight every `tick` seconds and cancels those
    past their deadline; the request then answers 503. Not `asyncio.timeout`: a timer per
    request measurably slowed cache hits (README, Performance); here a request costs a dict
    insert and delete, and is cut off at most one `tick` late. The deadline also bounds
    retries: `RetryPolicy.remaining` reads it from `deadline_var`.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(0.02, seconds / 20)  # at most 50 wake-ups a second
        self._running: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()

    def enter(self, task: asyncio.Task[Any]) -> contextvars.Token[float | None]:
        """Start `task`'s clock (the pipeline calls this around the handler, no frame of its
        own); `leave` with the token it returns."""
        deadline = asyncio.get_running_loop().time() + self.seconds
        self._running[task] = deadline
        return deadline_var.set(deadline)

    def overran(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task`'s CancelledError is the watchdog's; it is then uncancelled, to be
        answered 503. Otherwise the client went away, or the server is stopping."""
        if task not in self._expired:
            return False
        task.uncancel()
        return True

    def leave(self, task: asyncio.Task[Any], token: contextvars.Token[float | None]) -> None:
        self._running.pop(task, None)
        self._expired.discard(task)
        deadline_var.reset(token)

    def bring_forward(self, seconds: float) -> None:
        """No request in flight may run longer than `seconds` from now (shutdown)."""
        latest = asyncio.get_running_loop().time() + seconds
        for task, deadline in self._running.items():
            self._running[task] = min(deadline, latest)

    def sweep(self, now: float) -> None:
        overdue = [task for task, deadline in self._running.items() if deadline <= now]
        for task in overdue:
            del self._running[task]
            self._expired.add(task)
            task.cancel()

    def sweep_now(self) -> None:
        self.sweep(asyncio.get_running_loop().time())


DEADLINES = web.AppKey("deadlines", Deadlines)


async def deadlines_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the deadline watchdog while the app serves."""
    deadlines = app[DEADLINES]
    async with running(every(deadlines.tick, deadlines.sweep_now), "deadlines"):
        yield
