"""REDIS_URL as redis-py reads it, parsed once into the options both cache clients are built from.

`redis://[user:password@]host[:port][/db][?option=value...]`, or `rediss://` for TLS; the
options are redis-py's (`ssl_ca_certs`, `ssl_cert_reqs`, `ssl_check_hostname`, `db`, ...).
`redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db][?options]`
(or `rediss+sentinel://`) names Sentinel's nodes and the primary's service name; the data
nodes' options are read, by the same rules, from the equivalent `redis://` URL, so the two
schemes cannot drift apart. Cluster URLs are refused (README, Cache: Sentinel).
Settings call it at start-up to refuse a URL the cache could never use (it would fail open,
silently); the cache builds its clients from the result (service/cache/redis_backend.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.exceptions import RedisError


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """redis-py's connection keyword arguments for the URL: its `parse_url`, checked."""

    options: Mapping[str, Any] = field(repr=False)  # the password is among them
    # Sentinel only: where the sentinels are, which primary to ask them for, and the
    # password the sentinels themselves want (`sentinel_password=`, Bitnami's auth.sentinel).
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        """Read `url`, or raise ValueError saying why it is unusable (never echoing it)."""
        scheme = url.partition("://")[0].lower()
        if "cluster" in scheme:
            raise ValueError(
                "Redis Cluster is not supported: the cache's Lua lookup builds a key inside "
                "the script, which Cluster cannot route (README, Cache)"
            )
        if scheme in ("redis+sentinel", "rediss+sentinel"):
            return _sentinel_target(url, scheme)
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


SENTINEL_PORT = 26379


def _sentinel_target(url: str, scheme: str) -> RedisTarget:
    """`redis+sentinel://` as Sentinel hosts, a service name, and the data nodes' options."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for host in hosts.split(","):
        if not host:
            continue
        try:
            one = urlsplit(f"//{host}")
            address = (one.hostname or "", one.port or SENTINEL_PORT)
        except ValueError:  # a port that is not a number
            address = ("", 0)
        if not address[0]:
            raise ValueError(f"a sentinel is not host[:port], got {host!r}")
        sentinels.append(address)
    if not sentinels:
        raise ValueError("no sentinel named: redis+sentinel://host[:port][,host...]/service_name")
    service_name, _, db = parts.path.strip("/").partition("/")
    if not service_name:
        raise ValueError("no service name: redis+sentinel://host[:port]/service_name[/db]")
    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_password = next((v for k, v in query if k == "sentinel_password"), None)
    rest = urlencode([(k, v) for k, v in query if k != "sentinel_password"])
    # The data nodes' options: redis-py's reading of the same URL as redis:// (the host is
    # a stand-in: the sentinels name the primary, and its connections take their address).
    data_scheme = "rediss" if scheme.startswith("rediss") else "redis"
    at = f"{userinfo}@" if userinfo else ""
    data = RedisTarget.from_url(f"{data_scheme}://{at}sentinel-primary/{db}?{rest}")
    options = {k: v for k, v in data.options.items() if k not in ("host", "port")}
    return RedisTarget(options, tuple(sentinels), service_name, sentinel_password)
