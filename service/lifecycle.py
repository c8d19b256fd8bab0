"""Process-level state the probes report: whether shutdown has begun."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass
class Lifecycle:
    shutting_down: bool = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
