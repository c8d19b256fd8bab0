"""The deployment files agree with the Kubernetes schemas and with the service itself."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.http.routes import ENDPOINTS
from service.settings.loading import load_settings
from service.settings.model import Settings
from tests.helpers import ROOT
from tests.helpers.servers import free_port, wait_for_port

MANIFESTS = ROOT / "config" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MANIFESTS / name).read_text())
    return document


def _container() -> dict[str, Any]:
    container: dict[str, Any] = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


@pytest.mark.parametrize(
    "name", sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_manifests_match_the_kubernetes_schemas(name: str) -> None:
    kubernetes_validate.validate(_load(name), KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_real_manifest() -> None:
    listed = set(_load("kustomization.yaml")["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
    }
    assert listed == present


def test_probes_point_at_real_routes_on_the_served_port() -> None:
    container = _container()
    served = {endpoint.path for endpoint in ENDPOINTS if endpoint.method == "GET"}
    port = container["ports"][0]
    assert port["name"] == "http"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert container[probe]["httpGet"]["port"] == "http"
    exposed = re.search(r"^EXPOSE (\d+) (\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert exposed is not None
    assert port["containerPort"] == int(exposed.group(1)) == _production().server.port
    metrics = container["ports"][1]
    assert metrics["name"] == "metrics"
    assert metrics["containerPort"] == int(exposed.group(2)) == _production().metrics.port
    annotations = _load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    # The Service (and any ingress behind it) carries the API port only.
    assert [p["targetPort"] for p in _load("service.yaml")["spec"]["ports"]] == ["http"]


def _production_env() -> dict[str, str]:
    """What the pod's environment would be: the ConfigMap plus the example Secret."""
    env = dict(_load("configmap.yaml")["data"])
    secret = _load("secret.example.yaml")["stringData"]
    for item in _container()["env"]:
        env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def _production() -> Settings:
    return load_settings(_production_env())


def test_the_pod_environment_is_valid_production_configuration() -> None:
    settings = _production()
    assert settings.environment == "production"
    assert settings.cache.backend == "redis"
    assert settings.log.format == "json"
    assert settings.auth.configured


def test_every_configmap_key_is_a_setting_the_service_reads() -> None:
    known = {"SERVICE_ENV", "SERVICE_CONFIG_DIR"}
    for section in dataclasses.fields(Settings):
        if section.name in ("environment", "tracing"):  # tracing: the SDK's OTEL_* variables
            continue
        fields = dataclasses.fields(getattr(_production(), section.name))
        known |= {f.metadata["env"] for f in fields if f.metadata.get("env")}
    assert set(_production_env()) <= known


def test_termination_grace_covers_the_pre_stop_sleep_and_gunicorns_graceful_timeout() -> None:
    spec = _load("deployment.yaml")["spec"]["template"]["spec"]
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5  # the endpoints controller and the ingress notice within it
    shutdown = _production().shutdown
    # gunicorn.conf.py's graceful_timeout: aiohttp's worker waits 95% of it for requests.
    graceful = math.ceil(shutdown.graceful_timeout_seconds / 0.95) + 5
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful


def test_pod_runs_as_the_image_user_with_a_read_only_root() -> None:
    spec = _load("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    assert spec["securityContext"]["runAsUser"] == int(user.group(1))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts  # METRICS_DIR and gunicorn's heartbeat files live there
    assert "METRICS_DIR=/tmp/" in (ROOT / "Dockerfile").read_text()


def test_image_ships_only_what_it_needs() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", "tests", ".git"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]' in dockerfile
    python = (ROOT / ".python-version").read_text().strip()  # the tests' Python minor version
    assert dockerfile.count(f"FROM python:{python}-") == 2


def test_adev_runserver_serves_the_app_factory(test_env: dict[str, str], tmp_path: Path) -> None:
    """`adev runserver service/app.py`, as the README says, finds create_app and serves it."""
    port = free_port()
    env = {**os.environ, **test_env}
    adev = str(Path(sys.executable).parent / "adev")
    with (tmp_path / "adev.log").open("wb") as log:
        command = [adev, "runserver", "service/app.py", "--port", str(port)]
        command += ["--aux-port", str(free_port())]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60, process=process)
        # adev restarts the app when a watched file changes (other tests write files), and
        # its port may refuse for that moment: ask again until it answers.
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/live", timeout=10
                ) as reply:
                    assert reply.status == 200
                    break
            except urllib.error.URLError as error:  # urlopen wraps a refused connection
                if not isinstance(error.reason, ConnectionRefusedError):
                    raise
                assert time.monotonic() < deadline, "adev never served the app"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
