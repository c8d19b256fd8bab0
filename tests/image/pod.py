"""What the pod asks of the container, read from config/kubernetes/ (the manifests, not a copy).

The image test runs the container with these settings, so a change to the manifests is
tested by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBERNETES = Path(__file__).resolve().parents[2] / "config" / "kubernetes"


@dataclass(frozen=True)
class Probe:
    path: str
    port: int


@dataclass(frozen=True)
class Pod:
    uid: int
    gid: int
    read_only_root: bool
    no_new_privileges: bool
    cap_drop: tuple[str, ...]
    cap_add: tuple[str, ...]
    tmpfs: tuple[tuple[str, int | None], ...]  # (mount path, size limit in bytes)
    env: dict[str, str]  # from the ConfigMap (envFrom)
    secret_env: tuple[str, ...]  # names the Secret provides (env valueFrom secretKeyRef)
    ports: dict[str, int]  # port name -> containerPort
    startup: Probe
    liveness: Probe
    readiness: Probe
    startup_seconds: float  # periodSeconds x failureThreshold
    grace_seconds: int
    metrics_port: int


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}


def _bytes(quantity: str) -> int:
    for unit, factor in _UNITS.items():
        if quantity.endswith(unit):
            return int(quantity[: -len(unit)]) * factor
    return int(quantity)


def _documents(name: str) -> list[dict[str, Any]]:
    with (KUBERNETES / name).open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def _probe(spec: dict[str, Any], ports: dict[str, int]) -> Probe:
    get = spec["httpGet"]
    port = get["port"]
    return Probe(get["path"], ports[port] if isinstance(port, str) else int(port))


def load_pod() -> Pod:
    (deployment,) = _documents("deployment.yaml")
    (configmap,) = _documents("configmap.yaml")
    template = deployment["spec"]["template"]
    spec = template["spec"]
    (container,) = spec["containers"]
    pod_security = spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    if security.get("runAsNonRoot") and security.get("runAsUser", 0) == 0:
        raise ValueError("deployment.yaml: runAsNonRoot with runAsUser 0")

    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    tmpfs = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        empty_dir = volume.get("emptyDir")
        if empty_dir is None:
            raise ValueError(f"deployment.yaml: volume {mount['name']} is not an emptyDir")
        limit = empty_dir.get("sizeLimit")
        tmpfs.append((mount["mountPath"], _bytes(limit) if limit else None))

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        if ref != configmap["metadata"]["name"]:
            raise ValueError(f"deployment.yaml: unknown ConfigMap {ref}")
        env.update({key: str(value) for key, value in configmap["data"].items()})
    secret_env = []
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            secret_env.append(variable["name"])

    ports = {port["name"]: int(port["containerPort"]) for port in container["ports"]}
    capabilities = security.get("capabilities", {})
    startup = container["startupProbe"]
    annotations = template["metadata"].get("annotations", {})
    return Pod(
        uid=int(security["runAsUser"]),
        gid=int(security.get("runAsGroup", security["runAsUser"])),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        cap_drop=tuple(capabilities.get("drop", [])),
        cap_add=tuple(capabilities.get("add", [])),
        tmpfs=tuple(tmpfs),
        env=env,
        secret_env=tuple(secret_env),
        ports=ports,
        startup=_probe(startup, ports),
        liveness=_probe(container["livenessProbe"], ports),
        readiness=_probe(container["readinessProbe"], ports),
        startup_seconds=float(
            startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        ),
        grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
        metrics_port=int(annotations.get("prometheus.io/port", ports.get("metrics", 0))),
    )


def podman_security_args(pod: Pod) -> list[str]:
    """The pod's security context as podman flags (seccomp RuntimeDefault is podman's own)."""
    args = [f"--user={pod.uid}:{pod.gid}"]
    if pod.read_only_root:
        # podman would add its own tmpfs on /tmp, /run and /var/tmp; the pod has only its mounts.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if pod.no_new_privileges:
        args.append("--security-opt=no-new-privileges")
    args += [f"--cap-drop={cap.lower()}" for cap in pod.cap_drop]
    args += [f"--cap-add={cap.lower()}" for cap in pod.cap_add]
    for path, size in pod.tmpfs:
        options = "rw,nosuid,nodev,mode=1777" + (f",size={size}" if size else "")
        args.append(f"--tmpfs={path}:{options}")
    return args
