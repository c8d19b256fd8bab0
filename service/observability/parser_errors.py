"""Requests aiohttp's HTTP parser refuses, logged as one WARNING line without the input.

aiohttp answers these itself, before any middleware (aio-libs/aiohttp#3287, #9882), and
logs each at ERROR with a traceback whose message quotes the offending bytes: a scanner
probing the port would flood the log, and a client could write into it. This filter on
aiohttp's `aiohttp.server` logger rewrites those records in place; every other record
passes untouched. Behind the front (config/haproxy/) such requests never get here.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

PARSER_LOGGER = "aiohttp.server"


class ParserErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            # aiohttp logs "Error handling request from %s" with the peer's address.
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s: %d %s"
            record.args = (remote, error.code, type(error).__name__)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def install_parser_error_filter() -> None:
    """Once per process (configure_logging calls it; a second call adds nothing)."""
    logger = logging.getLogger(PARSER_LOGGER)
    if not any(isinstance(f, ParserErrorFilter) for f in logger.filters):
        logger.addFilter(ParserErrorFilter())
