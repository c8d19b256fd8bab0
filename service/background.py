"""Tasks that live as long as the app serves: started in a cleanup_ctx, cancelled at its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run `work` while the block lasts; cancel it, and wait for it, when the block ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def every(seconds: float, action: Callable[[], None]) -> None:
    """Call `action` every `seconds`, the first time `seconds` from now, until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        action()


async def within[T](seconds: float, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or TimeoutError after `seconds` however slowly `work` unwinds.

    `asyncio.wait_for` and `asyncio.timeout` wait for the cancelled work to finish
    cancelling, so a driver slow to honour a cancellation holds the caller past its bound
    (a readiness probe, a shutdown). Here the work is cancelled and left to end on its own.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError
    return task.result()


def _consume(task: asyncio.Task[Any]) -> None:
    """An abandoned task's outcome is of no interest: retrieve it so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
