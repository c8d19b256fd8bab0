"""The miss floors: bare aiohttp reading a user and their orders the way the service does.

`GET /users/{user_id}` runs the service's two queries at once with `asyncio.gather` (the
user by `_id`, no projection; the 100 newest orders on the `user_newest_first` index) and
answers with the documents as JSON. No middleware, no cache, no retries, no conversions:
what any aiohttp app pays for that read with the driver FLOOR_DRIVER names (`motor` or
`pymongo`), the line the service's miss CPU is judged against. Like bench/baseline_app.py,
gunicorn also reads this module as its (empty) config: `--config python:bench.floor_app`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

Document = dict[str, Any]
ORDER_HISTORY_LIMIT = 100  # service.domain.representation.ORDER_HISTORY_LIMIT
NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]
COLLECTIONS = web.AppKey("collections", tuple[AsyncCollection[Document], AsyncCollection[Document]])


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    url, driver = os.environ["MONGO_URL"], os.environ.get("FLOOR_DRIVER", "motor")
    # tz_aware as in service/storage/mongo.py: it changes how every datetime is decoded.
    client: Any = (
        AsyncMongoClient(url, tz_aware=True)
        if driver == "pymongo"
        else AsyncIOMotorClient(url, tz_aware=True)
    )
    database = client[os.environ.get("MONGO_DB", "bench")]
    users, orders = database["users"], database["orders"]
    # The index the service builds for this query (service/storage/mongo.py); a no-op if present.
    index = [("user_id", ASCENDING), *NEWEST_FIRST]
    await orders.create_indexes([IndexModel(index, name="user_newest_first")])
    app[COLLECTIONS] = (users, orders)
    yield
    closing = client.close()
    if closing is not None:  # AsyncMongoClient's close is a coroutine, Motor's is not
        await closing


async def read_user(app: web.Application, user_id: str) -> bytes | None:
    """The user and their newest orders as JSON, or None when there is no such user.
    bench/plain_app.py's misses read through this too."""
    users, orders = app[COLLECTIONS]
    cursor = orders.find({"user_id": user_id}).sort(NEWEST_FIRST).limit(ORDER_HISTORY_LIMIT)
    user, newest = await asyncio.gather(
        users.find_one({"_id": user_id}), cursor.to_list(length=ORDER_HISTORY_LIMIT)
    )
    if user is None:
        return None
    return orjson.dumps({"user": user, "orders": newest})


async def get_user(request: web.Request) -> web.Response:
    body = await read_user(request.app, request.match_info["user_id"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(mongo_ctx)
    app.router.add_get("/users/{user_id}", get_user)
    return app
