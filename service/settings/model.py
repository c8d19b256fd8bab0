"""The settings' shapes: one frozen dataclass per TOML section.

A field declares its type and range (`Annotated[int, Meta(ge=, le=)]`, read by msgspec when
service/settings/loading.py decodes it), the environment variable that overrides it, and
whether it is a secret: secrets are left out of reprs, so logging settings cannot leak them.
They are dataclasses rather than msgspec Structs because callers and tests derive variants
with `dataclasses.replace`, and msgspec converts to dataclasses just as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from msgspec import Meta

ENVIRONMENTS = ("development", "test", "production")
CacheBackend = Literal["memory", "redis", "none"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]  # capitals: matched case-insensitively
MongoDriver = Literal["motor", "pymongo"]
# Surrounding blanks are dropped before decoding, so "  " is empty too.
Text = Annotated[str, Meta(min_length=1)]
Port = Annotated[int, Meta(ge=1, le=65535)]
Millis = Annotated[int, Meta(ge=1, le=600_000)]


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the key."""


def setting(env: str | None = None, *, secret: bool = False) -> Any:
    """The environment variable that overrides a setting, and whether it is a secret."""
    return field(metadata={"env": env} if env else {}, repr=not secret)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: Text = setting("HOST")
    port: Port = setting("PORT")
    # gunicorn workers; 0 = two per CPU core, at most 8 (python -m service is one process).
    workers: Annotated[int, Meta(ge=0, le=64)] = setting("WEB_CONCURRENCY")
    max_in_flight: Annotated[int, Meta(ge=1, le=100_000)] = setting("MAX_IN_FLIGHT")
    max_request_line_bytes: Annotated[int, Meta(ge=256, le=65_536)] = setting()
    max_header_bytes: Annotated[int, Meta(ge=1024, le=65_536)] = setting()
    keepalive_timeout_seconds: Annotated[float, Meta(ge=0.1, le=3600)] = setting(
        "KEEPALIVE_TIMEOUT_SECONDS"
    )
    body_timeout_seconds: Annotated[float, Meta(ge=0.1, le=300)] = setting("BODY_TIMEOUT_SECONDS")


@dataclass(frozen=True, slots=True)
class MongoSettings:
    # motor (the default) or pymongo (PyMongo's own AsyncMongoClient): see service/storage/mongo.py.
    driver: MongoDriver = setting("MONGO_DRIVER")
    url: Text = setting("MONGO_URL", secret=True)  # it may hold a password
    database: Text = setting("MONGO_DB")
    app_name: Text = setting()
    max_pool_size: Annotated[int, Meta(ge=1, le=10_000)] = setting()
    min_pool_size: Annotated[int, Meta(ge=0, le=10_000)] = setting()
    server_selection_timeout_ms: Millis = setting()
    connect_timeout_ms: Millis = setting()
    socket_timeout_ms: Millis = setting()
    heartbeat_frequency_ms: Annotated[int, Meta(ge=500, le=600_000)] = setting()


@dataclass(frozen=True, slots=True)
class CacheSettings:
    backend: CacheBackend = setting("CACHE_BACKEND")
    redis_url: Text = setting("REDIS_URL", secret=True)  # it may hold a password
    ttl_seconds: Annotated[int, Meta(ge=1, le=86_400)] = setting("CACHE_TTL_SECONDS")
    timeout_ms: Annotated[int, Meta(ge=1, le=10_000)] = setting()
    namespace: Text = setting("CACHE_NAMESPACE")
    # Each gunicorn worker would hold its own memory cache, stale up to the TTL after
    # another worker's write: allowed only when this says so.
    memory_across_workers: bool = setting("CACHE_MEMORY_ACROSS_WORKERS")
    # The memory backend's bound per process (keys, ETags, bodies, plus an estimate of
    # their overhead); beyond it the least recently used entries go.
    memory_max_bytes: Annotated[int, Meta(ge=4096, le=4 * 1024**3)] = setting(
        "CACHE_MEMORY_MAX_BYTES"
    )


@dataclass(frozen=True, slots=True)
class RequestSettings:
    deadline_seconds: Annotated[float, Meta(ge=0.05, le=300)] = setting("REQUEST_DEADLINE_SECONDS")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    base_ms: Annotated[int, Meta(ge=1, le=60_000)] = setting()
    cap_ms: Annotated[int, Meta(ge=1, le=60_000)] = setting()
    max_tries: Annotated[int, Meta(ge=1, le=10)] = setting("RETRY_MAX_TRIES")


@dataclass(frozen=True, slots=True)
class ShutdownSettings:
    drain_seconds: Annotated[float, Meta(ge=0, le=300)] = setting("SHUTDOWN_DRAIN_SECONDS")
    graceful_timeout_seconds: Annotated[float, Meta(ge=1, le=600)] = setting(
        "GRACEFUL_TIMEOUT_SECONDS"
    )


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    # Shared by gunicorn's workers so any of them can answer a scrape for all (see
    # service/observability/metrics.py); empty = one process, nothing shared. gunicorn fills it in.
    directory: str = setting("METRICS_DIR")
    # 0: /metrics is served with the API. Otherwise only on this port (same host), so the
    # API's ingress never exposes it; gunicorn's workers share it with SO_REUSEPORT.
    port: Annotated[int, Meta(ge=0, le=65535)] = setting("METRICS_PORT")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    ready_timeout_seconds: Annotated[float, Meta(ge=0.01, le=60)] = setting()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    tokens: tuple[str, ...] = setting("API_TOKENS", secret=True)
    token_sha256: tuple[str, ...] = setting(secret=True)
    reads: bool = setting("AUTH_READS")
    disabled: bool = setting("AUTH_DISABLED")

    @property
    def configured(self) -> bool:
        return not self.disabled and bool(self.tokens or self.token_sha256)


@dataclass(frozen=True, slots=True)
class PagingSettings:
    # Sign the `next` cursors (service/domain/cursors.py). Empty outside production: a random one
    # per process. The previous one is still accepted, for rotation.
    cursor_secret: str = setting("CURSOR_SECRET", secret=True)
    cursor_secret_previous: str = setting("CURSOR_SECRET_PREVIOUS", secret=True)


@dataclass(frozen=True, slots=True)
class DocsSettings:
    # GET /docs: Swagger UI for /openapi.json, from files the service ships (no CDN).
    enabled: bool = setting("DOCS_ENABLED")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = setting("LOG_LEVEL")
    format: LogFormat = setting("LOG_FORMAT")
    access: bool = setting("ACCESS_LOG")
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs), e.g. the ingress's range.
    trusted_proxies: tuple[str, ...] = setting("TRUSTED_PROXIES")


@dataclass(frozen=True, slots=True)
class CompressionSettings:
    enabled: bool = setting("COMPRESSION")
    # Smaller bodies go as they are: under a packet, gzip saves no round trip.
    min_bytes: Annotated[int, Meta(ge=1, le=10_000_000)] = setting("COMPRESS_MIN_BYTES")
    level: Annotated[int, Meta(ge=1, le=9)] = setting("COMPRESS_LEVEL")


@dataclass(frozen=True, slots=True)
class CorsSettings:
    # Exact origins (scheme://host[:port]) whose pages may call the API; empty = CORS off.
    allow_origins: tuple[str, ...] = setting("CORS_ALLOW_ORIGINS")
    max_age_seconds: Annotated[int, Meta(ge=0, le=86_400)] = setting("CORS_MAX_AGE_SECONDS")


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str
    server: ServerSettings
    mongo: MongoSettings
    cache: CacheSettings
    request: RequestSettings
    retry: RetrySettings
    shutdown: ShutdownSettings
    metrics: MetricsSettings
    health: HealthSettings
    auth: AuthSettings
    paging: PagingSettings
    docs: DocsSettings
    log: LogSettings
    compression: CompressionSettings
    cors: CorsSettings
    # Whether requests are traced: decided from the OpenTelemetry SDK's own variables
    # (loading.tracing_enabled), which the SDK itself reads for everything else.
    tracing: bool = False


SETTINGS = web.AppKey("settings", Settings)


MAX_AUTO_WORKERS = 8


def gunicorn_workers(settings: Settings) -> int:
    """The worker count gunicorn should run: as configured, or 2 per core capped at 8."""
    if settings.server.workers:
        return settings.server.workers
    return max(1, min(MAX_AUTO_WORKERS, 2 * (os.cpu_count() or 1)))


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and health output."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))
