"""gunicorn settings for user-service: `gunicorn --config gunicorn.conf.py`.

Everything comes from the service's own Settings (service/settings/*.toml + environment), loaded and
validated here, in the master, so a bad value stops gunicorn before any worker starts:
one line on stderr, exit code 2.
"""

import logging
import math
import os
import sys
from typing import Any

from service.app import settings_or_exit
from service.domain.cursors import new_cursor_secret
from service.observability.samples import claim_directory, release_directory, retire_worker
from service.settings.checks import check_worker_cache
from service.settings.model import ConfigError, gunicorn_workers

_settings = settings_or_exit()
if not _settings.paging.cursor_secret:
    # Development and test only (production refuses to start without one): a secret for
    # this run, shared by every worker, or a page from one worker would be refused by another.
    os.environ["CURSOR_SECRET"] = new_cursor_secret()
try:
    check_worker_cache(_settings, gunicorn_workers(_settings))
except ConfigError as _error:
    print(f"user-service: configuration error: {_error}", file=sys.stderr)
    raise SystemExit(2) from None

# The same factory as every other entry point, called in each worker after the fork.
wsgi_app = "service.app:create_app()"
# aiohttp's own uvloop worker, as it ships.
worker_class = "aiohttp.GunicornUVLoopWebWorker"
workers = gunicorn_workers(_settings)
bind = [f"{_settings.server.host}:{_settings.server.port}"]

# Never preload: the app (and its Motor client, with its threads and sockets) must be
# created in each worker. A client created before fork() is shared by all workers and breaks.
preload_app = False

# SIGTERM: the worker stops accepting (the pod's preStop sleep and the front's health
# checks drained it already: README, Rolling deploys); requests in flight then get
# shutdown.graceful_timeout_seconds and answer 503 if still busy (service/lifecycle.py).
# aiohttp's worker waits 95% of gunicorn's graceful_timeout for them, and gunicorn SIGKILLs
# at 100%: the margin leaves room for closing the clients.
GRACEFUL_MARGIN_SECONDS = 5
graceful_timeout = math.ceil(_settings.shutdown.graceful_timeout_seconds / 0.95) + (
    GRACEFUL_MARGIN_SECONDS
)
# A worker silent for this long (event loop blocked) is killed and replaced.
timeout = 30
# The idle keep-alive timeout and parser limits come from the service's settings
# (server.*) through the app's handler_args, exactly as under python -m service.

# Access logs are written by the service itself (one line per request, with request ids).
accesslog = None
errorlog = "-"
loglevel = _settings.log.level.lower()
proc_name = "user-service"
# gunicorn 25+ opens a control socket (for gunicornc) under $HOME: the image's user has no
# home, so every start logged "Control server error". Nothing here uses it.
control_socket_disable = True


def when_ready(server: Any) -> None:
    """Workers share a metrics directory so any of them can answer a scrape for all; a fresh
    start counts from zero. Claimed once the sockets are bound (a failed start leaves nothing
    behind) and before any worker forks: the environment carries it to them. Kept on the
    arbiter, which outlives a SIGHUP reload (that re-runs this file, not this hook)."""
    server.metrics_directory = claim_directory(_settings.metrics.directory)
    os.environ["METRICS_DIR"] = str(server.metrics_directory.path)


def child_exit(server: Any, worker: Any) -> None:
    """Keep a dead worker's counts in the totals, and drop its per-process series."""
    retire_worker(server.metrics_directory.path, worker.pid)


def on_exit(server: Any) -> None:
    """What the server wrote in the metrics directory goes with it (the directory too, if
    it made it)."""
    release_directory(server.metrics_directory)


class _ListenerClosedTwice(logging.Filter):
    """uvloop owns a listening socket it serves and closes it at shutdown; gunicorn then
    closes its own wrapper of the same descriptor and logs EBADF at INFO on every rollout
    (benoitc/gunicorn#3013, #1877). Harmless: only that one line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.getMessage().startswith("Error while closing socket")
            and "[Errno 9]" in record.getMessage()
        )


def post_worker_init(worker: Any) -> None:
    """In each worker, once it is set up: the filter above on gunicorn's error log."""
    worker.log.error_log.addFilter(_ListenerClosedTwice())
