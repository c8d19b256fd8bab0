"""Loading: the TOML files shipped in the package plus environment variables, decoded once.

The rest of the service receives a `Settings` and never reads `os.environ`: that keeps
tests, gunicorn workers and `adev runserver` reading the same, checked values.
Order of precedence: settings/default.toml < settings/<SERVICE_ENV>.toml < environment, where
settings/ is the package's own directory (package data, so an installed wheel has it) unless
SERVICE_CONFIG_DIR names another.

msgspec decodes every value: strictly from TOML, which has real numbers (a quoted "80" is a
mistake there), and in its lax mode from the environment, whose values are all strings.
What stays hand-written here, and why:
- the wording of errors: msgspec's name a `$.path` and a type; ours name the environment
  variable or the key that was actually read and quote the value given (never a secret);
- unknown keys are refused per file, so the message names the file;
- blanks are trimmed, comma-separated lists split, and yes/no/on/off read as booleans
  (msgspec's lax mode takes only true/false/1/0), as settings were read before msgspec.
Numbers from the environment follow msgspec's lax grammar: "8e3" is 8000 and "1_000" is
refused (Python's int() read them the other way round); NaN is out of every range.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

from service.settings.checks import check_settings
from service.settings.model import ENVIRONMENTS, ConfigError, Settings

_BOOLEAN_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}


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
        name: _decode_section(name, kind, merged.get(name, {}), env)
        for name, kind in _section_types().items()
    }
    settings = Settings(environment=environment, tracing=tracing_enabled(env), **sections)
    check_settings(settings, env)
    return settings


def tracing_enabled(env: Mapping[str, str]) -> bool:
    """On when an OTLP endpoint is set for the SDK (traces' own or the generic one), unless
    OTEL_SDK_DISABLED=true. Only this decision is ours: the SDK and its exporter read every
    other OTEL_* variable (service name, resource, sampler, batch sizes) themselves."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(env.get(name, "").strip() for name in endpoints)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _section_types() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {name: kind for name, kind in hints.items() if name not in ("environment", "tracing")}


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


def _decode_section(
    section: str, kind: type, values: dict[str, Any], env: Mapping[str, str]
) -> Any:
    """One section's dataclass: each field from its environment variable, else from TOML."""
    hints = get_type_hints(kind, include_extras=True)
    decoded: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        env_name = f.metadata.get("env")
        name = f"{section}.{f.name}"
        if env_name and env_name in env:
            label, raw, from_env = env_name, env[env_name], True
        elif f.name in values:
            label, raw, from_env = name, values[f.name], False
        else:
            raise ConfigError(f"{name}: missing (set it in service/settings/default.toml)")
        decoded[f.name] = _decode(label, hints[f.name], raw, from_env, secret=not f.repr)
    return kind(**decoded)


def _decode(label: str, hint: Any, raw: Any, from_env: bool, *, secret: bool) -> Any:
    kind = _unannotated(hint)
    # Booleans were always read leniently, from TOML too ("yes", 1): msgspec's lax mode.
    strict = not from_env and kind is not bool
    try:
        return msgspec.convert(_tidy(kind, raw, from_env), hint, strict=strict)
    except msgspec.ValidationError as error:
        given = " (value not shown)" if secret else f", got {raw!r}"
        raise ConfigError(_explain(label, hint, given, error)) from None


def _tidy(kind: Any, raw: Any, from_env: bool) -> Any:
    """The raw value as msgspec should see it: trimmed, lists split, boolean words spelled
    as msgspec knows them, and capitalised choices (log levels) upper-cased."""
    if kind is bool and not isinstance(raw, bool):
        text = str(raw).strip().lower()
        return _BOOLEAN_WORDS.get(text, text)
    if isinstance(raw, list):
        items = [item.strip() if isinstance(item, str) else item for item in raw]
        return [item for item in items if item != ""]
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if get_origin(kind) is tuple and from_env:
        return [item.strip() for item in text.split(",") if item.strip()]
    if get_origin(kind) is Literal and all(str(choice).isupper() for choice in get_args(kind)):
        return text.upper()
    return text


def _explain(label: str, hint: Any, given: str, error: msgspec.ValidationError) -> str:
    """msgspec's error in the service's one-line wording: what was expected, what was given."""
    kind = _unannotated(hint)
    if get_origin(kind) is Literal:
        return f"{label}: expected one of {', '.join(get_args(kind))}{given}"
    if get_origin(kind) is tuple:
        return f"{label}: expected a list of strings"
    if kind is bool:
        return f"{label}: expected true or false{given}"
    if kind is str:
        return f"{label}: expected a non-empty string{given}"
    noun = "an integer" if kind is int else "a number"
    # msgspec says "Expected `int` >= 1" (or <=) when only the range was wrong.
    if get_origin(hint) is Annotated and (" >= " in str(error) or " <= " in str(error)):
        meta = next(arg for arg in get_args(hint)[1:] if isinstance(arg, msgspec.Meta))
        return f"{label}: expected {noun} from {meta.ge:g} to {meta.le:g}{given}"
    return f"{label}: expected {noun}{given}"


def _unannotated(hint: Any) -> Any:
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint
