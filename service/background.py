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
