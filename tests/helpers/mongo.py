"""The database side of a test: which commands the driver sent, and SecantusDB's fail points."""

from __future__ import annotations

import threading
from typing import Any

from pymongo import monitoring

from service.storage.mongo import Mongo


class CommandRecorder(monitoring.CommandListener):
    """Driver command events for one database, in the order the driver reported them."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.events: list[tuple[str, str, int]] = []
        self.commands: list[dict[str, Any]] = []  # the documents of the started ones
        self.failures: list[dict[str, Any]] = []  # the replies (or errors) of failed ones
        self._lock = threading.Lock()

    def _add(self, kind: str, name: str, request_id: int) -> None:
        with self._lock:
            self.events.append((kind, name, request_id))

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            with self._lock:
                self.commands.append(dict(event.command))
            self._add("started", event.command_name, event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.database_name == self.database:
            self._add("succeeded", event.command_name, event.request_id)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.database_name == self.database:
            with self._lock:
                self.failures.append(dict(event.failure))
            self._add("failed", event.command_name, event.request_id)

    def started_names(self) -> list[str]:
        with self._lock:
            return [name for kind, name, _ in self.events if kind == "started"]

    def outstanding(self) -> list[tuple[str, int]]:
        """Commands the driver started and has not yet reported finished (either way)."""
        with self._lock:
            events = list(self.events)
        finished = {request_id for kind, _, request_id in events if kind != "started"}
        return [(n, i) for kind, n, i in events if kind == "started" and i not in finished]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.commands.clear()
            self.failures.clear()


class FailPoint:
    """Arms SecantusDB's `failCommand` for one test and always switches it off afterwards."""

    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo

    async def arm(self, mode: str | dict[str, int], **data: Any) -> None:
        await self._mongo.client.admin.command(
            {"configureFailPoint": "failCommand", "mode": mode, "data": data}
        )

    async def off(self) -> None:
        await self._mongo.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
