"""The MongoDB driver seam: client lifecycle and collections, for either driver.

`mongo.driver` picks Motor (the default) or PyMongo's native `AsyncMongoClient`, which
upstream recommends now that Motor is deprecated. This module is the only one that knows
which: the rest of the service sees `Mongo`, collections typed as PyMongo's async
collection (Motor's answers the same awaited calls: find/sort/limit/to_list, the CRUD
methods, async iteration), the error classes re-exported below (both drivers raise
PyMongo's) and `await Mongo.close()` (Motor closes at once, PyMongo awaits its pool).
The tests run every database test on both drivers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from importlib.metadata import version
from typing import Any

import pymongo
from aiohttp import web
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.monitoring import CommandListener

from service.background import running, within
from service.settings.model import SETTINGS, MongoDriver, MongoSettings, redact_url
from service.storage.indexes import create_indexes

__all__ = [
    "MONGO",
    "MONGO_LISTENERS",
    "AutoReconnect",
    "BulkWriteError",
    "Collection",
    "CommandListener",
    "ConnectionFailure",
    "Document",
    "DuplicateKeyError",
    "ExecutionTimeout",
    "Mongo",
    "NetworkTimeout",
    "NotPrimaryError",
    "OperationFailure",
    "PyMongoError",
    "ServerSelectionTimeoutError",
    "WriteConcernError",
    "driver_version",
    "mongo_ctx",
]

log = logging.getLogger(__name__)

Document = dict[str, Any]
# The interface the queries (users.py, orders.py) code against: PyMongo's async collection. Motor's
# collection is another class with the same awaited methods, so under Motor it is the
# shape, not the class, that holds (both drivers run the whole suite).
Collection = AsyncCollection[Document]
Client = AsyncMongoClient[Document]


class Mongo:
    """One client and the collections the queries use."""

    def __init__(self, settings: MongoSettings, listeners: Sequence[CommandListener] = ()) -> None:
        self.settings = settings
        # Creating the client does no I/O: start-up never waits for the database.
        # The driver's own retries are off: service.storage.retry is the one retry policy, and a
        # retry it cannot see would double the waits it budgets for.
        options: dict[str, Any] = dict(
            appname=settings.app_name,
            maxPoolSize=settings.max_pool_size,
            minPoolSize=settings.min_pool_size,
            serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
            connectTimeoutMS=settings.connect_timeout_ms,
            socketTimeoutMS=settings.socket_timeout_ms,
            heartbeatFrequencyMS=settings.heartbeat_frequency_ms,
            # Polling notices a recovered server within one heartbeat; the streaming
            # monitor can sit on a stale "unknown" for a whole heartbeat period.
            serverMonitoringMode="poll",
            retryReads=False,
            retryWrites=False,
            tz_aware=True,
            event_listeners=list(listeners),
        )
        # Motor runs PyMongo's synchronous client on a thread pool; AsyncMongoClient is
        # asyncio all the way down, so a cancelled call stops instead of running on.
        client: Any
        if settings.driver == "pymongo":
            client = AsyncMongoClient(settings.url, **options)
        else:
            client = AsyncIOMotorClient(settings.url, **options)
        self.client: Client = client
        database = self.client[settings.database]
        self.users: Collection = database["users"]
        self.orders: Collection = database["orders"]
        self.indexes_ready = False

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create the indexes the service relies on; creating an existing index is a no-op."""
        await create_indexes(self.client[self.settings.database])
        self.indexes_ready = True

    async def ensure_indexes_until_done(self, first_delay: float = 0.5, cap: float = 10.0) -> None:
        """Retry index creation in the background until the database lets us."""
        delay = first_delay
        while True:
            try:
                await self.ensure_indexes()
            except PyMongoError as exc:
                log.warning(
                    "index creation failed (%s); retrying in %.1fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
            else:
                log.info("indexes ready on %s", redact_url(self.settings.url))
                return

    async def close(self) -> None:
        """Motor's close() is synchronous; AsyncMongoClient's is a coroutine."""
        closing = self.client.close()
        if closing is not None:
            await closing


def driver_version(driver: MongoDriver) -> str:
    """What the start-up line and `user_service_build_info` say about the driver."""
    if driver == "pymongo":
        return f"pymongo {pymongo.version} (AsyncMongoClient)"
    return f"motor {version('motor')} (on pymongo {pymongo.version})"


MONGO = web.AppKey("mongo", Mongo)
_CLOSE_SECONDS = 5.0
MONGO_LISTENERS = web.AppKey("mongo_listeners", list[CommandListener])


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the client, build indexes in the background, close on shutdown."""
    listeners: list[CommandListener] = app.get(MONGO_LISTENERS, [])
    settings = app[SETTINGS].mongo
    mongo = Mongo(settings, listeners)
    app[MONGO] = mongo
    log.info(
        "starting with MongoDB driver %s, database %s on %s",
        driver_version(settings.driver),
        settings.database,
        redact_url(settings.url),
    )
    async with running(mongo.ensure_indexes_until_done(), "ensure-indexes"):
        yield
    try:
        # A client still talking to a server that stopped answering must not hold the exit.
        await within(_CLOSE_SECONDS, mongo.close())
    except TimeoutError:
        log.warning("the MongoDB client did not close within %gs; exiting anyway", _CLOSE_SECONDS)
