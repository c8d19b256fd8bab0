from __future__ import annotations

import os
import subprocess
import sys

from service.config import Settings
from service.db import Mongo
from service.seed import seed
from tests.conftest import Client


async def test_seed_is_idempotent_and_served(client: Client, mongo: Mongo) -> None:
    first = await seed(mongo, users=30, orders_per_user=4)
    assert (first.users_inserted, first.orders_inserted) == (30, 120)
    again = await seed(mongo, users=35, orders_per_user=4)
    assert (again.users_inserted, again.orders_inserted) == (5, 20)
    assert await mongo.users.count_documents({}) == 35
    some_user = await mongo.users.find_one({})
    assert some_user is not None
    body = await (await client.get(f"/users/{some_user['_id']}")).json()
    assert len(body["orders"]) == 4


def test_seed_command(settings: Settings) -> None:
    env = {
        **os.environ,
        "SERVICE_ENV": "test",
        "MONGO_URL": settings.mongo.url,
        "MONGO_DB": settings.mongo.database,
    }
    command = [sys.executable, "-m", "service", "seed", "--users", "7", "--orders-per-user", "2"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "inserted 7 users and 14 orders" in first.stdout
    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "inserted 0 users and 0 orders" in second.stdout
    empty_only = subprocess.run(
        [*command, "--if-empty"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "nothing to do" in empty_only.stdout
