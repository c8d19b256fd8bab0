from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings.loading import default_config_dir, load_settings
from service.settings.model import ConfigError, redact_url
from tests.helpers.service import run_service

PRODUCTION = {
    "SERVICE_ENV": "production",
    "MONGO_URL": "mongodb://db:27017/?replicaSet=rs0",
    "REDIS_URL": "redis://cache:6379/0",
    "API_TOKENS": "a-long-enough-write-token,another-token-0123:read",
    "CURSOR_SECRET": "a-production-cursor-secret",
}


def test_defaults_merge_environment_file_and_variables() -> None:
    settings = load_settings({**PRODUCTION, "PORT": "9000"})
    assert settings.environment == "production"
    assert settings.server.port == 9000  # environment beats production.toml's 8000
    assert settings.server.host == "0.0.0.0"  # production.toml beats default.toml
    assert settings.cache.backend == "redis"
    assert settings.log.format == "json"
    assert settings.mongo.max_pool_size == 100  # only default.toml sets it


def test_development_is_the_default_environment() -> None:
    assert load_settings({}).environment == "development"


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "PORT: expected an integer, got 'abc'"),
        ({"PORT": "70000"}, "PORT: expected an integer from 1 to 65535, got '70000'"),
        ({"CACHE_BACKEND": "foo"}, "CACHE_BACKEND: expected one of memory, redis, none, got 'foo'"),
        ({"SERVICE_ENV": "staging"}, "SERVICE_ENV: expected one of development, test, production"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR"),
        ({"MONGO_URL": "  "}, "MONGO_URL: expected a non-empty string"),
    ],
)
def test_bad_values_name_the_key_and_the_expected_form(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(message)


def _config_dir_with(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "default.toml").write_text((default_config_dir() / "default.toml").read_text())
    (tmp_path / "development.toml").write_text(extra)
    return tmp_path


def test_unknown_key_in_a_toml_file_is_refused(tmp_path: Path) -> None:
    directory = _config_dir_with(tmp_path, "[mongo]\npool = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key mongo\.pool"):
        load_settings({}, config_dir=directory)


def test_unknown_section_and_wrong_toml_type_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[mongodb\]"):
        load_settings({}, config_dir=_config_dir_with(tmp_path, "[mongodb]\nurl = 'x'\n"))
    with pytest.raises(ConfigError, match=r"server\.port: expected an integer"):
        load_settings({}, config_dir=_config_dir_with(tmp_path, "[server]\nport = '80'\n"))


def test_level_is_case_insensitive() -> None:
    assert load_settings({"LOG_LEVEL": "debug"}).log.level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "key"),
    [({"PORT": "abc"}, "PORT"), ({"CACHE_BACKEND": "foo"}, "CACHE_BACKEND")],
)
def test_cli_exits_2_with_one_line_and_no_traceback(env: dict[str, str], key: str) -> None:
    result = run_service({**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert key in lines[0]
    assert "Traceback" not in result.stderr


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("mongodb://app:s3cret@db:27017/x") == "mongodb://app:***@db:27017/x"
    assert redact_url("redis://:pw@cache:6379/0") == "redis://***@cache:6379/0"
    assert redact_url("mongodb://db:27017") == "mongodb://db:27017"


@pytest.mark.parametrize(
    ("missing", "key"),
    [
        ("MONGO_URL", "MONGO_URL"),
        ("REDIS_URL", "REDIS_URL"),
        ("API_TOKENS", "API_TOKENS"),
        ("CURSOR_SECRET", "CURSOR_SECRET"),
    ],
)
def test_production_refuses_unsafe_settings(missing: str, key: str) -> None:
    env = {name: value for name, value in PRODUCTION.items() if name != missing}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(f"{key}: production")


def test_production_may_run_without_tokens_only_when_said_explicitly() -> None:
    env = {name: value for name, value in PRODUCTION.items() if name != "API_TOKENS"}
    settings = load_settings({**env, "AUTH_DISABLED": "true"})
    assert not settings.auth.configured


def test_tokens_parse_and_never_show_in_reprs() -> None:
    settings = load_settings(PRODUCTION)
    assert settings.auth.tokens == ("a-long-enough-write-token", "another-token-0123:read")
    assert "a-long-enough-write-token" not in repr(settings)


@pytest.mark.parametrize("tokens", ["short", "has space in it 1234", "x" * 20 + ":admin"])
def test_malformed_tokens_are_refused_without_echoing_them(tokens: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"API_TOKENS": tokens})
    assert str(caught.value).startswith("API_TOKENS: expected")
    assert tokens not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "section", "key", "expected"),
    [
        ({"AUTH_READS": " yes "}, "auth", "reads", True),
        ({"AUTH_READS": "On"}, "auth", "reads", True),
        ({"DOCS_ENABLED": "off"}, "docs", "enabled", False),
        ({"COMPRESSION": "0"}, "compression", "enabled", False),
        ({"PORT": " 9000 "}, "server", "port", 9000),
        ({"LOG_LEVEL": " warning "}, "log", "level", "WARNING"),
        ({"CACHE_BACKEND": " none "}, "cache", "backend", "none"),
        (
            {"TRUSTED_PROXIES": " 10.0.0.0/8, ,127.0.0.1 "},
            "log",
            "trusted_proxies",
            ("10.0.0.0/8", "127.0.0.1"),
        ),
        ({"METRICS_DIR": "  "}, "metrics", "directory", ""),
    ],
)
def test_environment_values_are_trimmed_split_and_read_as_before(
    env: dict[str, str], section: str, key: str, expected: object
) -> None:
    assert getattr(getattr(load_settings(env), section), key) == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[server]\nport = 80.0\n", "server.port: expected an integer, got 80.0"),
        ("[server]\nport = true\n", "server.port: expected an integer, got True"),
        ("[server]\nport = 0\n", "server.port: expected an integer from 1 to 65535, got 0"),
        ("[server]\nhost = 5\n", "server.host: expected a non-empty string, got 5"),
        ("[auth]\ntokens = 'abc'\n", "auth.tokens: expected a list of strings"),
        ("[cache]\nbackend = 5\n", "cache.backend: expected one of memory, redis, none, got 5"),
        ("[docs]\nenabled = 'maybe'\n", "docs.enabled: expected true or false, got 'maybe'"),
        (
            "[request]\ndeadline_seconds = nan\n",
            "request.deadline_seconds: expected a number from 0.05 to 300, got nan",
        ),
    ],
)
def test_toml_values_are_type_checked_strictly(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_dir=_config_dir_with(tmp_path, extra))
    assert str(caught.value) == message


def test_a_missing_key_names_the_file_to_set_it_in(tmp_path: Path) -> None:
    default = (default_config_dir() / "default.toml").read_text()
    (tmp_path / "default.toml").write_text(default.replace("ttl_seconds = 300\n", ""))
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_dir=tmp_path)
    assert (
        str(caught.value) == "cache.ttl_seconds: missing (set it in service/settings/default.toml)"
    )


def test_a_malformed_secret_is_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"REDIS_URL": "  ", "CACHE_BACKEND": "redis"})
    assert str(caught.value) == "REDIS_URL: expected a non-empty string (value not shown)"
    directory = _config_dir_with(tmp_path, "[paging]\ncursor_secret = 80061234567890\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_dir=directory)
    assert "80061234567890" not in str(caught.value)
    assert str(caught.value).startswith("paging.cursor_secret: expected")
