"""The recording and alerting rules in config/prometheus/: promtool checks them and runs their
unit tests, and they only name metrics the service exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from service.observability.metric_specs import SPECS
from service.settings.loading import load_settings
from tests.helpers.tools import require_command

RULES = Path(__file__).resolve().parents[1] / "config" / "prometheus"
KUBERNETES = RULES.parent / "kubernetes"


def _promtool(*args: str) -> str:
    promtool = require_command("promtool", "prometheus")
    done = subprocess.run([promtool, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS" in _promtool("check", "rules", "rules.yml")


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "rules.test.yml")


def _expressions() -> list[str]:
    groups = yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def test_rules_name_only_exported_metrics() -> None:
    exported = {spec.name for spec in SPECS}
    exported |= {f"{s.name}_bucket" for s in SPECS if s.kind == "histogram"}
    named = {name for expr in _expressions() for name in re.findall(r"\b([a-z_]+)\{", expr)}
    assert named - {"up"} <= exported, named - exported


def test_saturation_divides_by_the_pods_bound() -> None:
    """The 128 in the saturation rule is max_in_flight per process x workers per pod."""
    config = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]
    pod = {"SERVICE_ENV": "production", "MONGO_URL": "mongodb://db", "REDIS_URL": "redis://r",
           "API_TOKENS": "a-token-for-loading-settings",
           "CURSOR_SECRET": "a-cursor-secret-for-loading-settings"}  # fmt: skip
    settings = load_settings(pod)
    bound = settings.server.max_in_flight * int(config["WEB_CONCURRENCY"])
    (saturation,) = [e for e in _expressions() if "http_requests_in_progress" in e]
    assert saturation.strip().endswith(f"/ {bound}")
