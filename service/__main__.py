"""Command line: `python -m service` serves; `seed ...` loads demo data; `openapi` prints the
OpenAPI document for the configured settings (no server, no database: for client builds)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson
from aiohttp import web

from service.app import create_app, settings_or_exit
from service.http.openapi import build_document
from service.http.routes import ENDPOINTS
from service.lifecycle import drain
from service.observability.logging_setup import configure_logging
from service.seed import BATCH_DOCUMENTS, Progress, bulk_settings, seed
from service.settings.model import Settings
from service.storage.mongo import Mongo, PyMongoError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="user-service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP on HOST:PORT (the default)")
    commands.add_parser(
        "openapi", help="print the OpenAPI document (as GET /openapi.json serves it) and exit"
    )
    seeding = commands.add_parser("seed", help="insert demo users and orders (idempotent)")
    seeding.add_argument("--users", type=int, default=100, metavar="N")
    seeding.add_argument("--orders-per-user", type=int, default=5, metavar="M")
    seeding.add_argument(
        "--if-empty", action="store_true", help="do nothing when the users collection has data"
    )
    seeding.add_argument(
        "--batch-documents", type=int, default=BATCH_DOCUMENTS, metavar="K",
        help=f"documents per insert (default {BATCH_DOCUMENTS})",
    )  # fmt: skip
    seeding.add_argument(
        "--progress-every", type=float, default=5.0, metavar="SECONDS",
        help="when not on a terminal: a progress line this often (default 5)",
    )  # fmt: skip
    return parser


async def _seed(settings: Settings, args: argparse.Namespace) -> int:
    """Seed, then one line per skipped document and a summary; exit 1 if the database fails."""
    users, orders_per_user = args.users, args.orders_per_user
    mongo = Mongo(bulk_settings(settings.mongo))
    progress = Progress(users * (1 + orders_per_user), sys.stderr, args.progress_every)
    try:
        if args.if_empty and await mongo.users.estimated_document_count() > 0:
            print("seed: users already present, nothing to do")
            return 0
        result = await seed(
            mongo, users, orders_per_user, batch_documents=args.batch_documents, progress=progress
        )
    except PyMongoError as error:  # the database failed, not the data: say so in one line
        progress.close()
        detail = " ".join(str(error).split())[:300]
        print(f"seed: stopped, the database failed: {type(error).__name__}: {detail}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        await mongo.close()
    progress.close()
    for refused in result.skipped:
        print(f"seed: skipped {refused.kind} {refused.id}: {refused.reason}")
    skipped = f"{len(result.skipped)} skipped, " if result.skipped else ""
    print(
        f"seed: inserted {result.users_inserted} users and {result.orders_inserted} orders "
        f"(asked for {users} users x {orders_per_user} orders; {skipped}"
        "the rest were already there)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit()
    if args.command == "openapi":
        document = orjson.dumps(build_document(ENDPOINTS, settings), option=orjson.OPT_INDENT_2)
        sys.stdout.write(document.decode() + "\n")
        return 0
    if args.command == "seed":
        if args.users < 0 or args.orders_per_user < 0 or args.batch_documents < 1:
            print(
                "seed: --users and --orders-per-user must be >= 0, --batch-documents >= 1",
                file=sys.stderr,
            )
            return 2
        configure_logging(settings.log)
        return asyncio.run(_seed(settings, args))
    asyncio.run(serve(settings))
    return 0


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and shut down gracefully (exit 0), with
    aiohttp's public runner API: the same app as gunicorn's workers serve."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,  # the service writes its own structured access log
        # Past the graceful timeout (lifecycle.shut_down answers 503 by then), aiohttp
        # cancels what is left.
        shutdown_timeout=settings.shutdown.graceful_timeout_seconds + 1,
    )
    await runner.setup()
    await web.TCPSite(runner, settings.server.host, settings.server.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await drain(app)
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
