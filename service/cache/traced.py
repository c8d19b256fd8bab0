"""The Redis backend with a CLIENT span per call, when tracing is on. Not
opentelemetry-instrumentation-redis: it rewraps redis-py's classes (or one client's methods),
and aiocache's client for stores is not ours to wrap (README, Tracing)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from opentelemetry.trace import Span, SpanKind, Tracer

from service.cache.response_cache import Backend, Cached
from service.settings.redis_url import RedisTarget


class TracedBackend:
    """`backend`'s calls, each in a span named by its Redis command (semconv: the
    operation, `db.system.name` redis, the server; never keys or values)."""

    def __init__(self, backend: Backend, tracer: Tracer, target: RedisTarget) -> None:
        self._backend = backend
        self._tracer = tracer
        options = target.options
        self._attributes: dict[str, str | int] = {
            "db.system.name": "redis",
            "db.system": "redis",
            "db.namespace": str(options.get("db", 0)),
            "server.address": str(options.get("host", "localhost")),
            "server.port": int(options.get("port", 6379)),
        }

    def _span(self, operation: str) -> AbstractContextManager[Span]:
        return self._tracer.start_as_current_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.operation.name": operation},
        )

    def peek(self, key: str) -> Cached | None:
        return self._backend.peek(key)

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        with self._span("EVALSHA"):  # the lookup script: token and entry in one trip
            return await self._backend.lookup(key)

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        with self._span("SET"):
            await self._backend.store(key, token, value, ttl)

    async def bump(self, keys: list[str], ttl: int) -> None:
        with self._span("MULTI"):  # MSET and an EXPIRE per key, in one transaction
            await self._backend.bump(keys, ttl)

    async def close(self) -> None:
        await self._backend.close()
