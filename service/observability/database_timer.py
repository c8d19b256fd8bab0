"""The db_operation_duration_seconds histogram, fed by the MongoDB driver's command events."""

from __future__ import annotations

from typing import Any

from service.observability.metrics import Metrics
from service.storage.mongo import CommandListener


class DatabaseTimer(CommandListener):
    """Times every MongoDB command through the driver's monitoring events (the driver
    calls these on its own threads, which `Metrics` allows for)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def started(self, event: Any) -> None:
        return None

    def succeeded(self, event: Any) -> None:
        self._metrics.db_operation(event.command_name, "ok", event.duration_micros / 1e6)

    def failed(self, event: Any) -> None:
        self._metrics.db_operation(event.command_name, "error", event.duration_micros / 1e6)
