"""One pipelined Redis connection for the cache's hit path.

Kept hand-written for a measured reason (README, Performance): redis-py's work per command
(a pool checkout, Python-level packing, two timeouts, observability hooks) cost more CPU on
a cache hit than everything else the service does. Here a command is one bytes join, a
buffered write and a future; the commands of one event-loop iteration leave in one write,
and hiredis parses the replies, which Redis sends in order. Everything else the cache does
still goes through aiocache.

Failure is bounded like any cache call: connecting, and every reply, must finish within
`timeout`; otherwise the connection is dropped, every command waiting on it fails with
TimeoutError, and the next call connects afresh.

Where to connect and how is redis-py's reading of the URL (service/settings/redis_url.py),
shared with aiocache's client: TLS with redis-py's own SSL context, the ACL user, the
password and the database.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import Any, cast

import hiredis
from redis.exceptions import ResponseError

from service.settings.redis_url import RedisTarget


def pack(*args: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.lost = False
        self._buffer: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small pipelined writes must not wait for Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, command: bytes, future: asyncio.Future[Any]) -> None:
        if not self._buffer:  # the first command this iteration: write them all at its end
            asyncio.get_running_loop().call_soon(self._flush)
        self._buffer.append(command)
        self.waiting.append((future, time.monotonic()))

    def _flush(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future, _ = self.waiting.popleft()
            if future.done():
                continue  # its caller gave up (cancelled); the reply is still consumed
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("the Redis connection was lost"))

    def fail(self, error: Exception) -> None:
        self.lost = True
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class PipelinedRedis:
    def __init__(self, target: RedisTarget, timeout: float) -> None:
        self._target = target
        self._setup: list[bytes] = []
        if target.username:  # an ACL user (Redis 6+); a user with `nopass` takes any password
            self._setup.append(
                pack(b"AUTH", target.username.encode(), (target.password or "").encode())
            )
        elif target.password:
            self._setup.append(pack(b"AUTH", target.password.encode()))
        if target.db:
            self._setup.append(pack(b"SELECT", str(target.db).encode()))
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, *args: bytes) -> Any:
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.send(pack(*args), future)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._timeout, self._check)
        return await future

    def _check(self) -> None:
        """Drop the connection when its oldest command has waited longer than the timeout."""
        self._watchdog = None
        connection = self._connection
        if connection is None or not connection.waiting:
            return
        waited = time.monotonic() - connection.waiting[0][1]
        if waited >= self._timeout:
            connection.fail(TimeoutError("Redis did not answer in time"))
            self._connection = None
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._timeout - waited, self._check)

    async def _connect(self) -> _Connection:
        """One connection attempt at a time; concurrent callers share its outcome."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            # Retrieved even when every caller was cancelled: no "never retrieved" warning.
            self._connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                _, connection = await loop.create_connection(
                    _Connection, self._target.host, self._target.port, ssl=self._target.tls
                )
                for command in self._setup:  # AUTH, SELECT: their errors fail the connect
                    future: asyncio.Future[Any] = loop.create_future()
                    connection.send(command, future)
                    await future
        except BaseException:
            if connection is not None:
                connection.fail(ConnectionError("the Redis connection set-up failed"))
            raise
        self._connection = connection
        return connection

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connection is not None:
            self._connection.fail(ConnectionError("closed"))
            self._connection = None
