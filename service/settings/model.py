"""Settings: TOML files shipped in the package plus environment variables, validated once.

The rest of the service receives a `Settings` and never reads `os.environ`: that keeps
tests, gunicorn workers and `adev runserver` reading the same, checked values.
Order of precedence: settings/default.toml < settings/<SERVICE_ENV>.toml < environment, where
settings/ is the package's own directory (package data, so an installed wheel has it) unless
SERVICE_CONFIG_DIR names another.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from service.cache.pipelined import RedisTarget

ENVIRONMENTS = ("development", "test", "production")
CacheBackend = Literal["memory", "redis", "none"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
MongoDriver = Literal["motor", "pymongo"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the key."""


def _key(
    env: str | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    secret: bool = False,
    empty_ok: bool = False,
) -> Any:
    """Declare a setting: the environment variable that overrides it, its allowed range,
    and whether it is a secret (kept out of reprs, so logging settings cannot leak it)."""
    meta = {"env": env, "low": low, "high": high, "empty_ok": empty_ok}
    return field(metadata=meta, repr=not secret)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = _key("HOST")
    port: int = _key("PORT", low=1, high=65535)
    # gunicorn workers; 0 = two per CPU core, at most 8 (python -m service is one process).
    workers: int = _key("WEB_CONCURRENCY", low=0, high=64)
    max_in_flight: int = _key("MAX_IN_FLIGHT", low=1, high=100_000)
    max_request_line_bytes: int = _key(low=256, high=65_536)
    max_header_bytes: int = _key(low=1024, high=65_536)
    # Connection bounds (server/connections.py): the same under python -m service and gunicorn.
    max_connections: int = _key("MAX_CONNECTIONS", low=16, high=1_000_000)
    keepalive_timeout_seconds: float = _key("KEEPALIVE_TIMEOUT_SECONDS", low=0.1, high=3600)
    header_timeout_seconds: float = _key("HEADER_TIMEOUT_SECONDS", low=0.1, high=300)
    body_timeout_seconds: float = _key("BODY_TIMEOUT_SECONDS", low=0.1, high=300)


@dataclass(frozen=True, slots=True)
class MongoSettings:
    # motor (the default) or pymongo (PyMongo's own AsyncMongoClient): see service/storage/mongo.py.
    driver: MongoDriver = _key("MONGO_DRIVER")
    url: str = _key("MONGO_URL")
    database: str = _key("MONGO_DB")
    app_name: str = _key()
    max_pool_size: int = _key(low=1, high=10_000)
    min_pool_size: int = _key(low=0, high=10_000)
    server_selection_timeout_ms: int = _key(low=1, high=600_000)
    connect_timeout_ms: int = _key(low=1, high=600_000)
    socket_timeout_ms: int = _key(low=1, high=600_000)
    heartbeat_frequency_ms: int = _key(low=500, high=600_000)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    backend: CacheBackend = _key("CACHE_BACKEND")
    redis_url: str = _key("REDIS_URL", secret=True)  # it may hold a password
    ttl_seconds: int = _key("CACHE_TTL_SECONDS", low=1, high=86_400)
    timeout_ms: int = _key(low=1, high=10_000)
    namespace: str = _key("CACHE_NAMESPACE")
    # Each gunicorn worker would hold its own memory cache, stale up to the TTL after
    # another worker's write: allowed only when this says so.
    memory_across_workers: bool = _key("CACHE_MEMORY_ACROSS_WORKERS")
    # The memory backend's bound per process (keys, ETags, bodies, plus an estimate of
    # their overhead); beyond it the least recently used entries go.
    memory_max_bytes: int = _key("CACHE_MEMORY_MAX_BYTES", low=4096, high=4 * 1024**3)


@dataclass(frozen=True, slots=True)
class RequestSettings:
    deadline_seconds: float = _key("REQUEST_DEADLINE_SECONDS", low=0.05, high=300)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    base_ms: int = _key(low=1, high=60_000)
    cap_ms: int = _key(low=1, high=60_000)
    max_tries: int = _key("RETRY_MAX_TRIES", low=1, high=10)


@dataclass(frozen=True, slots=True)
class ShutdownSettings:
    drain_seconds: float = _key("SHUTDOWN_DRAIN_SECONDS", low=0, high=300)
    graceful_timeout_seconds: float = _key("GRACEFUL_TIMEOUT_SECONDS", low=1, high=600)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    # Shared by gunicorn's workers so any of them can answer a scrape for all (see
    # service/observability/metrics.py); empty = one process, nothing shared. gunicorn fills it in.
    directory: str = _key("METRICS_DIR", empty_ok=True)
    # 0: /metrics is served with the API. Otherwise only on this port (same host), so the
    # API's ingress never exposes it; gunicorn's workers share it with SO_REUSEPORT.
    port: int = _key("METRICS_PORT", low=0, high=65535)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    ready_timeout_seconds: float = _key(low=0.01, high=60)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    tokens: tuple[str, ...] = _key("API_TOKENS", secret=True)
    token_sha256: tuple[str, ...] = _key(secret=True)
    reads: bool = _key("AUTH_READS")
    disabled: bool = _key("AUTH_DISABLED")

    @property
    def configured(self) -> bool:
        return not self.disabled and bool(self.tokens or self.token_sha256)


@dataclass(frozen=True, slots=True)
class PagingSettings:
    # Sign the `next` cursors (service/domain/cursors.py). Empty outside production: a random one
    # per process. The previous one is still accepted, for rotation.
    cursor_secret: str = _key("CURSOR_SECRET", secret=True, empty_ok=True)
    cursor_secret_previous: str = _key("CURSOR_SECRET_PREVIOUS", secret=True, empty_ok=True)


@dataclass(frozen=True, slots=True)
class DocsSettings:
    # GET /docs: Swagger UI for /openapi.json, from files the service ships (no CDN).
    enabled: bool = _key("DOCS_ENABLED")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = _key("LOG_LEVEL")
    format: LogFormat = _key("LOG_FORMAT")
    access: bool = _key("ACCESS_LOG")
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs), e.g. the ingress's range.
    trusted_proxies: tuple[str, ...] = _key("TRUSTED_PROXIES")


@dataclass(frozen=True, slots=True)
class CompressionSettings:
    enabled: bool = _key("COMPRESSION")
    # Smaller bodies go as they are: under a packet, gzip saves no round trip.
    min_bytes: int = _key("COMPRESS_MIN_BYTES", low=1, high=10_000_000)
    level: int = _key("COMPRESS_LEVEL", low=1, high=9)


@dataclass(frozen=True, slots=True)
class CorsSettings:
    # Exact origins (scheme://host[:port]) whose pages may call the API; empty = CORS off.
    allow_origins: tuple[str, ...] = _key("CORS_ALLOW_ORIGINS")
    max_age_seconds: int = _key("CORS_MAX_AGE_SECONDS", low=0, high=86_400)


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


SETTINGS = web.AppKey("settings", Settings)


MAX_AUTO_WORKERS = 8


def gunicorn_workers(settings: Settings) -> int:
    """The worker count gunicorn should run: as configured, or 2 per core capped at 8."""
    if settings.server.workers:
        return settings.server.workers
    return max(1, min(MAX_AUTO_WORKERS, 2 * (os.cpu_count() or 1)))


def check_worker_cache(settings: Settings, workers: int) -> None:
    """Refuse a per-process cache shared by several workers unless staleness is accepted."""
    cache = settings.cache
    if cache.backend == "memory" and workers > 1 and not cache.memory_across_workers:
        raise ConfigError(
            f"CACHE_BACKEND: memory with {workers} workers would serve stale reads for up to "
            f"{cache.ttl_seconds}s; use redis, WEB_CONCURRENCY=1, or "
            "CACHE_MEMORY_ACROSS_WORKERS=true to accept that"
        )


def default_config_dir() -> Path:
    """The TOML files inside the package: the same in a checkout, a wheel and the image."""
    return Path(__file__).resolve().parent


def load_settings(
    environ: Mapping[str, str] | None = None, config_dir: Path | None = None
) -> Settings:
    """Read, merge and validate every setting, or raise ConfigError naming the bad one."""
    env = dict(os.environ if environ is None else environ)
    environment = env.get("SERVICE_ENV", "development")
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"SERVICE_ENV: expected one of {', '.join(ENVIRONMENTS)}, got {environment!r}"
        )
    directory = Path(env["SERVICE_CONFIG_DIR"]) if "SERVICE_CONFIG_DIR" in env else None
    directory = directory or config_dir or default_config_dir()
    merged: dict[str, dict[str, Any]] = {}
    for name in ("default.toml", f"{environment}.toml"):
        path = directory / name
        if name == "default.toml" and not path.is_file():
            raise ConfigError(f"SERVICE_CONFIG_DIR: no default.toml in {directory}")
        if path.is_file():
            _merge(merged, _read_toml(path), path)
    sections = {
        name: _build_section(name, cls, merged.get(name, {}), env)
        for name, cls in _section_types().items()
    }
    settings = Settings(environment=environment, **sections)
    _check_timeouts(settings)
    if settings.server.max_connections <= settings.server.max_in_flight:
        raise ConfigError(
            "server.max_connections (MAX_CONNECTIONS): expected more than server.max_in_flight "
            f"({settings.server.max_in_flight}), got {settings.server.max_connections}"
        )
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
    if environment == "production":
        _check_production(settings, env)
    return settings


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


_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}(:read)?")
_TOKEN_DIGEST = re.compile(r"[0-9a-f]{64}(:read)?")


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


def _check_redis_url(url: str) -> None:
    """Refuse at start-up a URL the cache could never use (it would fail open, silently)."""
    try:
        RedisTarget.from_url(url)
    except ValueError as error:
        raise ConfigError(
            "REDIS_URL: expected redis://[user:password@]host[:port][/db][?options] or "
            f"rediss://..., as redis-py reads them: {error} (value not shown)"
        ) from None


MIN_SECRET_BYTES = 16


def _check_cursor_secrets(paging: PagingSettings) -> None:
    for env_name, value in (
        ("CURSOR_SECRET", paging.cursor_secret),
        ("CURSOR_SECRET_PREVIOUS", paging.cursor_secret_previous),
    ):
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{env_name}: expected at least {MIN_SECRET_BYTES} bytes (value not shown)"
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _section_types() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {name: kind for name, kind in hints.items() if name != "environment"}


def _merge(target: dict[str, dict[str, Any]], data: dict[str, Any], path: Path) -> None:
    """Fold one file into the merged settings, refusing keys no dataclass declares."""
    sections = _section_types()
    for section, values in data.items():
        if section not in sections or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        known = {f.name for f in dataclasses.fields(sections[section])}
        for key in values:
            if key not in known:
                expected = ", ".join(sorted(known))
                raise ConfigError(
                    f"{path}: unknown key {section}.{key} (expected one of {expected})"
                )
        target.setdefault(section, {}).update(values)


def _build_section(section: str, cls: type, values: dict[str, Any], env: Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    built: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_name = f.metadata.get("env")
        name = f"{section}.{f.name}"
        if env_name and env_name in env:
            label, raw, from_env = env_name, env[env_name], True
        elif f.name in values:
            label, raw, from_env = name, values[f.name], False
        else:
            raise ConfigError(f"{name}: missing (set it in service/settings/default.toml)")
        built[f.name] = _coerce(label, hints[f.name], raw, from_env, f.metadata)
    return cls(**built)


def _coerce(label: str, kind: Any, raw: Any, from_env: bool, meta: Mapping[str, Any]) -> Any:
    """Turn one raw value into its declared type, or raise ConfigError saying what was expected."""
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        value = raw.strip() if isinstance(raw, str) else raw
        if isinstance(value, str) and label.endswith(("LOG_LEVEL", "log.level")):
            value = value.upper()
        if value not in choices:
            raise ConfigError(f"{label}: expected one of {', '.join(choices)}, got {raw!r}")
        return value
    if get_origin(kind) is tuple:
        return _coerce_strings(label, raw, from_env)
    if kind is bool:
        return _coerce_bool(label, raw)
    if kind in (int, float):
        value = _coerce_number(label, kind, raw, from_env)
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{label}: expected {noun} from {low:g} to {high:g}, got {raw!r}")
        return value
    if kind is str:
        if isinstance(raw, str) and meta.get("empty_ok") and not raw.strip():
            return ""
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"{label}: expected a non-empty string, got {raw!r}")
        return raw.strip()
    raise ConfigError(f"{label}: unsupported type {kind!r}")  # pragma: no cover


def _coerce_number(label: str, kind: type, raw: Any, from_env: bool) -> int | float:
    noun = "an integer" if kind is int else "a number"
    if not from_env:
        # TOML has real numbers: a quoted "80" or a float where an int belongs is a mistake.
        valid = isinstance(raw, int) if kind is int else isinstance(raw, int | float)
        if isinstance(raw, bool) or not valid:
            raise ConfigError(f"{label}: expected {noun}, got {raw!r}")
        return kind(raw)  # type: ignore[no-any-return]
    try:
        return kind(str(raw).strip())  # type: ignore[no-any-return]
    except ValueError:
        raise ConfigError(f"{label}: expected {noun}, got {raw!r}") from None


def _coerce_strings(label: str, raw: Any, from_env: bool) -> tuple[str, ...]:
    """A list in TOML, a comma-separated string in the environment."""
    if from_env and isinstance(raw, str):
        items: list[Any] = raw.split(",")
    elif isinstance(raw, list):
        items = raw
    else:
        raise ConfigError(f"{label}: expected a list of strings")
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{label}: expected a list of strings")
    return tuple(item.strip() for item in items if item.strip())


def _coerce_bool(label: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{label}: expected true or false, got {raw!r}")


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
