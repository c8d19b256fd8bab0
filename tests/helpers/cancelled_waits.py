"""Run by tests/test_driver.py in an interpreter of its own: calls to a silent server,
cancelled just as PyMongo's wait for a server times out, then one more call. Prints what
became of them as JSON. (A client that hangs for good would hang any event loop it ran on.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pymongo
from pymongo.common import MIN_HEARTBEAT_INTERVAL

from service.settings.loading import load_settings
from service.storage.mongo import Mongo, ServerSelectionTimeoutError
from tests.helpers.app import CURSOR_SECRET, wait_until
from tests.helpers.servers import silent_server

CALLS = 20


async def as_their_wait_times_out(client: Any, calls: int, timeout: float = 5.0) -> None:
    """Return once `calls` calls have waited MIN_HEARTBEAT_INTERVAL for a server and that wait
    timed out. On Python 3.12+ the calls take AsyncMongoClient's topology lock back in turn,
    leaving no queue, and the interval's end (plus a tenth) is the moment. With 3.11's
    `asyncio.wait_for` a task sat in between, and the moment was when three of those tasks
    queue to take the lock back: that check stays so that the scenario still lands in the
    instant that hung the client there (timed by the interval alone, it passes on 3.11).
    Reads private state (PyMongo's topology, its lock and condition), never changes it, and
    only to time the cancellation: no public event marks that moment."""
    topology = client._topology
    lock = topology._lock
    loop = asyncio.get_running_loop()

    async def all_waiting() -> bool:
        return len(topology._condition._waiters) >= calls and not lock.locked()

    async def timed_out() -> bool:
        queued = len(lock._waiters or ())
        return queued >= 3 or loop.time() > waits_end + MIN_HEARTBEAT_INTERVAL / 10

    await wait_until(all_waiting, timeout, interval=0)
    waits_end = loop.time() + MIN_HEARTBEAT_INTERVAL
    # Past the start, when a change in the topology wakes them all (a notify, not a timeout).
    await asyncio.sleep(MIN_HEARTBEAT_INTERVAL / 2)
    await wait_until(timed_out, timeout, interval=0)


async def scenario() -> dict[str, Any]:
    async with silent_server() as port:
        environ = {
            "SERVICE_ENV": "test",
            "MONGO_DRIVER": "pymongo",
            "MONGO_URL": f"mongodb://127.0.0.1:{port}/?directConnection=true",
            "CURSOR_SECRET": CURSOR_SECRET,
        }
        settings = load_settings(environ).mongo
        mongo = Mongo(dataclasses.replace(settings, server_selection_timeout_ms=10_000))
        calls = [asyncio.create_task(mongo.ping()) for _ in range(CALLS)]
        await as_their_wait_times_out(mongo.client, CALLS)
        for call in calls:
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        try:
            with pymongo.timeout(0.5):
                await mongo.ping()
        except ServerSelectionTimeoutError as exc:
            next_call = type(exc).__name__
        else:
            next_call = "answered"
        await mongo.close()
    return {
        "not_cancelled": [repr(o) for o in outcomes if not isinstance(o, asyncio.CancelledError)],
        "next_call": next_call,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario())))
