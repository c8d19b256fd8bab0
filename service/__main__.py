"""Command line: `python -m service` serves; `python -m service seed ...` loads demo data."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from service.app import create_app, settings_or_exit
from service.config import Settings
from service.db import Mongo
from service.lifecycle import begin_shutdown, end_in_flight
from service.logs import configure_logging
from service.seed import seed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="user-service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP on HOST:PORT (the default)")
    seeding = commands.add_parser("seed", help="insert demo users and orders (idempotent)")
    seeding.add_argument("--users", type=int, default=100, metavar="N")
    seeding.add_argument("--orders-per-user", type=int, default=5, metavar="M")
    seeding.add_argument(
        "--if-empty", action="store_true", help="do nothing when the users collection has data"
    )
    return parser


async def _seed(settings: Settings, users: int, orders_per_user: int, if_empty: bool) -> int:
    mongo = Mongo(settings.mongo)
    try:
        if if_empty and await mongo.users.estimated_document_count() > 0:
            print("seed: users already present, nothing to do")
            return 0
        result = await seed(mongo, users, orders_per_user)
    finally:
        await mongo.close()
    print(
        f"seed: inserted {result.users_inserted} users and {result.orders_inserted} orders "
        f"(asked for {users} users x {orders_per_user} orders; the rest were already there)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit()
    if args.command == "seed":
        if args.users < 0 or args.orders_per_user < 0:
            print("seed: --users and --orders-per-user must be >= 0", file=sys.stderr)
            return 2
        configure_logging(settings.log)
        return asyncio.run(_seed(settings, args.users, args.orders_per_user, args.if_empty))
    asyncio.run(serve(settings))
    return 0


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and shut down gracefully (exit 0)."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.shutdown.graceful_timeout_seconds + 1,  # see end_in_flight
        access_log=None,  # the service writes its own structured access log
    )
    await runner.setup()
    await web.TCPSite(runner, settings.server.host, settings.server.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    begin_shutdown(app, settings.shutdown.drain_seconds)
    await asyncio.sleep(settings.shutdown.drain_seconds)
    end_in_flight(app)
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
