"""Logging set-up: one stderr handler, JSON or text lines, each with the request's id."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
from opentelemetry.trace import get_current_span

from service.observability.parser_errors import install_parser_error_filter
from service.observability.request_ids import request_id_var
from service.settings.model import LogSettings

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class _TraceIdFilter(logging.Filter):
    """The ids of the span current where the line is written (the request's, a database
    call's), installed only when tracing is on. Not opentelemetry-instrumentation-logging:
    it replaces the process's LogRecord factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = get_current_span().get_span_context()
        if context.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"
# How a second call recognises the handler the first one installed (a logging handler's
# name is public: `logging.getHandlerByName` finds handlers by it from Python 3.12).
HANDLER_NAME = "user-service"


def configure_logging(settings: LogSettings, *, traced: bool = False) -> None:
    """Install one stderr handler on the root logger; safe to call again (tests, reloads).
    `traced`: JSON lines written inside a span carry its trace_id and span_id."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.name == HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.name = HANDLER_NAME
    handler.addFilter(_RequestIdFilter())
    if traced:
        handler.addFilter(_TraceIdFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.level)
    install_parser_error_filter()
    # pymongo's DEBUG records carry whole commands, documents included: never log them.
    for noisy in ("pymongo", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(settings.level)))
