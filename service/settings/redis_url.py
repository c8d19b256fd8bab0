"""REDIS_URL as redis-py reads it, parsed once into the options both cache clients are built from.

`redis://[user:password@]host[:port][/db][?option=value...]`, or `rediss://` for TLS; the
options are redis-py's (`ssl_ca_certs`, `ssl_cert_reqs`, `ssl_check_hostname`, `db`, ...).
Settings call it at start-up to refuse a URL the cache could never use (it would fail open,
silently); the cache builds its clients from the result (service/cache/redis_backend.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.exceptions import RedisError


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """redis-py's connection keyword arguments for the URL: its `parse_url`, checked."""

    options: Mapping[str, Any] = field(repr=False)  # the password is among them

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        """Read `url`, or raise ValueError saying why it is unusable (never echoing it)."""
        try:
            options = cast(dict[str, Any], parse_url(url))
            if "path" in options:  # aiocache's RedisCache always passes a host and a port
                raise ValueError("unix sockets are not supported: use redis:// or rediss://")
            # redis-py ignores a path that is not a number and uses database 0: refused here,
            # since that would share another application's database.
            path = urlsplit(url).path.strip("/")
            if path and not path.isdigit():
                raise ValueError(f"the path must be a database number, got /{path}")
            # Building a connection object does no I/O; it refuses options redis-py does
            # not know and settings it cannot use, and loading its TLS context reads the
            # files the URL names.
            connection = ConnectionPool(**options).make_connection()  # type: ignore[no-untyped-call]
            if isinstance(connection, SSLConnection):
                connection.ssl_context.get()
        except TypeError as error:  # an option redis-py's connections do not take
            option = str(error).rpartition(" ")[2]
            raise ValueError(f"unknown option {option}") from None
        except RedisError as error:
            raise ValueError(str(error)) from None
        except OSError as error:  # ssl.SSLError included
            raise ValueError(f"the TLS files it names cannot be used ({error})") from None
        return cls(options=options)
