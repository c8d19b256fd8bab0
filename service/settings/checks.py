"""The checks no single field can make: settings that contradict each other, values with a
grammar of their own (tokens, networks, origins, the MongoDB and Redis URLs), and production's
demands."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from service.settings.model import AuthSettings, ConfigError, PagingSettings, Settings
from service.settings.mongo_url import RefusedOption, check_mongo_url
from service.settings.redis_url import RedisTarget

MIN_SECRET_BYTES = 16
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}(:read)?")
_TOKEN_DIGEST = re.compile(r"[0-9a-f]{64}(:read)?")


def check_settings(settings: Settings, env: Mapping[str, str]) -> None:
    """Raise ConfigError for the first setting that contradicts another or its own grammar."""
    _check_mongo_url(settings.mongo.url)
    _check_timeouts(settings)
    _check_tokens(settings.auth)
    _check_cursor_secrets(settings.paging)
    if settings.cache.backend == "redis":
        _check_redis_url(settings.cache.redis_url)
    _check_networks(settings.log.trusted_proxies)
    _check_origins(settings.cors.allow_origins)
    if settings.metrics.port == settings.server.port:
        raise ConfigError(
            f"metrics.port (METRICS_PORT): must differ from PORT ({settings.server.port}), or be 0"
        )
    if settings.environment == "production":
        _check_production(settings, env)


def check_worker_cache(settings: Settings, workers: int) -> None:
    """Refuse a per-process cache shared by several workers unless staleness is accepted."""
    cache = settings.cache
    if cache.backend == "memory" and workers > 1 and not cache.memory_across_workers:
        raise ConfigError(
            f"CACHE_BACKEND: memory with {workers} workers would serve stale reads for up to "
            f"{cache.ttl_seconds}s; use redis, WEB_CONCURRENCY=1, or "
            "CACHE_MEMORY_ACROSS_WORKERS=true to accept that"
        )


def _check_timeouts(settings: Settings) -> None:
    """One database call must fit in a request's deadline, or retries could never help."""
    deadline_ms = settings.request.deadline_seconds * 1000
    for name in ("server_selection_timeout_ms", "socket_timeout_ms"):
        value = getattr(settings.mongo, name)
        if value >= deadline_ms:
            raise ConfigError(
                f"mongo.{name}: expected less than request.deadline_seconds "
                f"({deadline_ms:g} ms), got {value}"
            )
    if settings.retry.cap_ms < settings.retry.base_ms:
        raise ConfigError("retry.cap_ms: expected at least retry.base_ms")


def _check_tokens(auth: AuthSettings) -> None:
    """Tokens are RFC 6750 bearer strings of 16+ characters, optionally suffixed `:read`."""
    for token in auth.tokens:
        if not _TOKEN.fullmatch(token):
            raise ConfigError(
                "API_TOKENS: expected comma-separated tokens of 16-512 characters from "
                "[A-Za-z0-9._~+/=-], each optionally ending in ':read' (value not shown)"
            )
    for digest in auth.token_sha256:
        if not _TOKEN_DIGEST.fullmatch(digest):
            raise ConfigError(
                "auth.token_sha256: expected 64 lower-case hex digits (SHA-256 of a token), "
                "optionally ending in ':read'"
            )


def _check_cursor_secrets(paging: PagingSettings) -> None:
    for env_name, value in (
        ("CURSOR_SECRET", paging.cursor_secret),
        ("CURSOR_SECRET_PREVIOUS", paging.cursor_secret_previous),
    ):
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{env_name}: expected at least {MIN_SECRET_BYTES} bytes (value not shown)"
            )


def _check_mongo_url(url: str) -> None:
    try:
        check_mongo_url(url)
    except RefusedOption as error:
        raise ConfigError(f"MONGO_URL: {error}") from None
    except ValueError as error:
        raise ConfigError(
            "MONGO_URL: expected mongodb://[user:password@]host[:port][,host...][/db][?options] "
            f"or mongodb+srv://..., as PyMongo reads them: {error} (value not shown)"
        ) from None


def _check_redis_url(url: str) -> None:
    try:
        RedisTarget.from_url(url)
    except ValueError as error:
        raise ConfigError(
            "REDIS_URL: expected redis://[user:password@]host[:port][/db][?options], "
            "rediss://..., or redis+sentinel://[user:password@]host[:port][,host...]/service"
            f"[/db][?options], as redis-py reads them: {error} (value not shown)"
        ) from None


def _check_networks(networks: tuple[str, ...]) -> None:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"TRUSTED_PROXIES: expected IP addresses or CIDR ranges, got {network!r}"
            ) from None


def _check_origins(origins: tuple[str, ...]) -> None:
    """Origins as browsers send them: compared byte for byte, so a path or `/` never matches."""
    for origin in origins:
        try:
            parts = urlsplit(origin)
            valid = (
                parts.scheme in ("http", "https")
                and bool(parts.hostname)
                and parts.port != 0  # reading .port validates it
                and "@" not in parts.netloc
                and origin == f"{parts.scheme}://{parts.netloc}"
                and origin == origin.lower()
            )
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(
                "CORS_ALLOW_ORIGINS: expected origins like https://app.example.com "
                f"(lower-case scheme://host[:port], no path or trailing /), got {origin!r}"
            )


def _check_production(settings: Settings, env: Mapping[str, str]) -> None:
    """Refuse the settings that are fine on a laptop and wrong in production."""
    if "MONGO_URL" not in env:
        raise ConfigError("MONGO_URL: production needs it set explicitly (a mongodb:// URL)")
    if settings.cache.backend == "redis" and "REDIS_URL" not in env:
        raise ConfigError("REDIS_URL: production with CACHE_BACKEND=redis needs it set explicitly")
    if not settings.paging.cursor_secret:
        raise ConfigError(
            f"CURSOR_SECRET: production needs it set ({MIN_SECRET_BYTES}+ bytes from a secret "
            "store), so that every instance signs paging cursors alike"
        )
    if not settings.auth.configured and not settings.auth.disabled:
        raise ConfigError(
            "API_TOKENS: production needs at least one write token "
            "(or AUTH_DISABLED=true to run without authentication on purpose)"
        )
