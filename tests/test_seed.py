from __future__ import annotations

import dataclasses
import os
import pty
import subprocess
import sys
import threading
from datetime import UTC, datetime

from service.seed import seed, seed_id
from service.settings.model import Settings
from service.storage.mongo import Mongo
from tests.helpers.app import Client
from tests.helpers.servers import MongoServer, free_port
from tests.helpers.service import run_service


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
    command = ("seed", "--users", "7", "--orders-per-user", "2")
    first = run_service(env, *command, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "inserted 7 users and 14 orders" in first.stdout
    second = run_service(env, *command, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "inserted 0 users and 0 orders" in second.stdout
    empty_only = run_service(env, *command, "--if-empty", timeout=60)
    assert empty_only.returncode == 0, empty_only.stderr
    assert "nothing to do" in empty_only.stdout


# --- the command at ordinary sizes, on a slow database, with data it must refuse ---------


def _seed_env(settings: Settings, mongo_url: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "SERVICE_ENV": "test",
        "MONGO_DRIVER": settings.mongo.driver,
        "MONGO_URL": mongo_url or settings.mongo.url,
        "MONGO_DB": settings.mongo.database,
    }


def _run_seed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_service(env, "seed", *args, timeout=240)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


async def test_thirty_users_with_120_orders_each_in_batches_with_progress_lines(
    settings: Settings, mongo: Mongo
) -> None:
    args = ("--users", "30", "--orders-per-user", "120", "--progress-every", "0")
    result = _run_seed(_seed_env(settings), *args)
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "inserted 30 users and 3600 orders" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("seed: ")]
    # Not on a terminal: a plain line per batch here (--progress-every 0), 500 documents at most.
    assert len(lines) >= 3630 // 500, result.stderr
    assert lines[-1] == "seed: 100% (3630/3630 documents)"
    assert await mongo.orders.count_documents({}) == 3600


async def test_bulk_work_outlives_the_request_timeout(
    settings: Settings, own_mongo_server: MongoServer
) -> None:
    """The first inserts stall 2 s, longer than the 1.5 s a request's reply may take (this
    server is the test's own, so the fail point touches no other test)."""
    direct = Mongo(dataclasses.replace(settings.mongo, url=own_mongo_server.url))
    try:
        await direct.client.admin.command(
            {"configureFailPoint": "failCommand", "mode": {"times": 2},
             "data": {"failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 2000}}
        )  # fmt: skip
        env = _seed_env(settings, own_mongo_server.url)
        result = _run_seed(env, "--users", "30", "--orders-per-user", "120")
        _no_traceback(result)
        assert result.returncode == 0, result.stderr
        assert "inserted 30 users and 3600 orders" in result.stdout
        orders = direct.client[settings.mongo.database]["orders"]
        assert await orders.count_documents({}) == 3600
    finally:
        await direct.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        await direct.close()


async def test_a_demo_email_another_user_has_is_skipped_in_one_line(
    settings: Settings, mongo: Mongo
) -> None:
    await mongo.ensure_indexes()
    now = datetime.now(UTC)
    real = {"_id": "u-real-user", "name": "Real", "email": "demo.user.3@example.com"}
    await mongo.users.insert_one({**real, "created_at": now, "updated_at": now})
    result = _run_seed(_seed_env(settings), "--users", "5", "--orders-per-user", "4")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if "skipped user" in line]
    assert skipped == [
        f"seed: skipped user {seed_id('user', 3)}: its email demo.user.3@example.com belongs "
        "to another user; its 4 orders skipped too"
    ]
    assert "inserted 4 users and 16 orders" in result.stdout
    assert "1 skipped" in result.stdout
    assert await mongo.orders.count_documents({"user_id": seed_id("user", 3)}) == 0
    stored = await mongo.users.find_one({"email": "demo.user.3@example.com"})
    assert stored is not None
    assert stored["_id"] == "u-real-user"


def test_on_a_terminal_progress_is_a_bar_redrawn_in_place(settings: Settings) -> None:
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "service", "seed", "--users", "20", "--orders-per-user", "50"],
            env=_seed_env(settings), stdout=subprocess.PIPE, stderr=follower, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    terminal = b"".join(chunks).decode()
    assert result.returncode == 0
    assert "inserted 20 users and 1000 orders" in result.stdout
    assert "\rseed [" + "#" * 30 + "] 100% 1020/1020 documents" in terminal
    assert terminal.endswith("\n")
    assert "Traceback" not in terminal


def test_an_unreachable_database_is_one_line_not_a_traceback(settings: Settings) -> None:
    env = _seed_env(settings, f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    result = _run_seed(env, "--users", "2", "--orders-per-user", "1")
    _no_traceback(result)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seed: stopped, the database failed: ServerSelectionTimeoutError")
