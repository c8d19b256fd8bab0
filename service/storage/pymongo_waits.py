"""AsyncMongoClient's waits on its conditions, made safe to cancel on Python 3.11.

PyMongo waits for a selectable server, and for a pooled connection, with
`asyncio.wait_for(condition.wait(), timeout)`. On 3.11 `wait_for` runs the wait in a task
of its own; when the caller is cancelled while that task is still taking the lock back
after a timeout, `wait_for` returns at once. The caller then released a lock another call
held ("Lock is not acquired"), the waiting task took it for nobody, and every later call,
cancelled ones included, waited forever (tests/test_driver.py). Any cancellation can land
there: a request's deadline, the readiness probe's bound, shutdown.

Python 3.12 rebuilt `wait_for` on `asyncio.timeout`, which waits in the caller's own task;
on 3.11 PyMongo's condition waits get that behaviour. Motor is untouched: its waits are
threads'.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

import pymongo.lock

T = TypeVar("T")


async def wait_in_callers_task(awaitable: Awaitable[T], seconds: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 has it (PyMongo passes both arguments by position):
    no task in between, so a cancelled `Condition.wait` takes its lock back before the
    caller goes on."""
    async with asyncio.timeout(seconds):
        return await awaitable


def make_condition_waits_cancel_safe() -> None:
    """Point PyMongo's condition waits (`pymongo.lock._async_cond_wait`) at
    `wait_in_callers_task` where `asyncio.wait_for` still runs a task in between."""
    if sys.version_info < (3, 12):
        # A module global PyMongo imported from asyncio, not an exported name of its own.
        pymongo.lock.wait_for = wait_in_callers_task  # type: ignore[attr-defined,assignment]
