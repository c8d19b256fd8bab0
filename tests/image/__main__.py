"""`make image-test`: build the Dockerfile with buildah, run the image with podman the way the
pod runs it, probe it from outside, stop it with SIGTERM; fail on any miss.

Run as root (`.ci/image-test` installs the tools first). Everything it creates lives under a
directory in /var/tmp and is removed at the end, except the stand-in base: a read-only image
store in IMAGE_CACHE_DIR (default /var/cache/user-service-image), keyed by its package list.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.servers import MongoServer, RedisServer, free_port
from tests.image.engine import ROOT, Engine, base_image_name, image_json
from tests.image.pod import Pod, load_pod, podman_security_args

TAG = "localhost/user-service:image-test"
CONTAINER = f"user-service-image-test-{os.getpid()}"
DISK_LIMIT_BYTES = 1536 * 1024**2
# On the trixie stand-in (Debian's Python 3.13) the image is about 250 MB: the base 193 MB,
# the installed dependencies and the service 56 MB (Swagger UI's files pruned to about 3 MB);
# tracing's packages (OpenTelemetry's SDK and OTLP exporter, protobuf) add about 13 MB.
# Past this, something that does not belong got in.
SIZE_LIMIT_BYTES = 275 * 10**6
WARM_LIMIT_SECONDS = 60
COLD_LIMIT_SECONDS = 240
# The host seen from inside slirp4netns (allow_host_loopback): the host's 127.0.0.1.
HOST_FROM_CONTAINER = "10.0.2.2"
# A log line an operator would read as a failure.
BAD_LINE = re.compile(r"traceback|\berror\b|\bcritical\b|exception", re.IGNORECASE)
COMPILERS = ("gcc", "cc", "c++", "g++", "make", "ld", "as")


class Check(Exception):
    """A miss: the run fails with this message."""


class Timings:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        print(f"image-test: {name}…", flush=True)
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - started))


class DiskWatch:
    """Peak of the space taken on the run directory's filesystem since the start (an upper
    bound: other processes writing there count too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start_free = shutil.disk_usage(path).free
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.start_free - shutil.disk_usage(self.path).free)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _http(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - http on loopback
        url, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_status(url: str, status: int, seconds: float, container: Engine) -> None:
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = _http(url)[0]
            if last == status:
                return
        except OSError as error:
            last = error
        state = container.podman("inspect", "--format", "{{.State.Status}}", CONTAINER).stdout
        if state.strip() != "running":
            raise Check(f"the container stopped ({state.strip()}) before {url} answered")
        time.sleep(0.25)
    raise Check(f"{url} did not answer {status} within {seconds:.0f} s (last: {last})")


def _expect(misses: list[str], condition: bool, message: str) -> None:
    """Record a miss and go on, so that one run names every miss."""
    if not condition:
        misses.append(message)
    print(f"  {'ok' if condition else 'MISS'}: {message}")


def _host_pids(root_pid: int) -> list[int]:
    """The container's processes as seen from the host: the init pid and its descendants."""
    pids, queue = [], [root_pid]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                queue += [int(child) for child in task.read_text().split()]
    return pids


def _ids(pid: int) -> tuple[list[int], list[int]]:
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.MULTILINE)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.MULTILINE)
    assert uids is not None
    assert gids is not None
    return [int(x) for x in uids.group(1).split()], [int(x) for x in gids.group(1).split()]


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def check_image_contents(engine: Engine, base: str, misses: list[str]) -> None:
    """No wheels, compilers or build configuration beyond what the base itself carries."""
    _check_layers(engine, base, misses)
    image_root = Path(engine.podman("image", "mount", TAG).stdout.strip())
    # The base sits in the read-only cached store, which podman will not mount: its one
    # layer's directory is its whole tree.
    (base_root,) = _layer_dirs(engine, base)
    try:

        def wheels(root: Path) -> set[str]:
            return {str(path.relative_to(root)) for path in root.rglob("*.whl")}

        added = sorted(wheels(image_root) - wheels(base_root))
        _expect(misses, not added, f"no wheels added to the image ({added[:5]})")
        _expect(misses, not (image_root / "wheels").exists(), "no /wheels directory")
        tools = [
            f"{directory}/{tool}"
            for directory in ("usr/bin", "usr/local/bin", "bin")
            for tool in COMPILERS
            if (image_root / directory / tool).exists()
        ]
        _expect(misses, not tools, f"no build tools in the image ({tools})")
        leaked = [
            name
            for name in ("etc/pip.conf", "run/secrets/build-ca.crt")
            if (image_root / name).exists() and not (base_root / name).exists()
        ]
        _expect(misses, not leaked, f"the build's pip configuration is not in the image ({leaked})")
    finally:
        engine.podman("image", "unmount", TAG, check=False)


def _layer_dirs(engine: Engine, image: str) -> list[Path]:
    data = image_json(engine, image).get("GraphDriver") or {}
    assert isinstance(data, dict)
    dirs = data.get("Data") or {}
    listed = [dirs.get("UpperDir", ""), *dirs.get("LowerDir", "").split(":")]
    return [Path(d) for d in listed if d]


def _check_layers(engine: Engine, base: str, misses: list[str]) -> None:
    """Each layer on its own: a file deleted by a later layer still ships in the earlier one."""
    ours = set(_layer_dirs(engine, TAG)) - set(_layer_dirs(engine, base))
    if engine.driver == "overlay":
        wheels = sorted(f"/{p.relative_to(layer)}" for layer in ours for p in layer.rglob("*.whl"))
        _expect(
            misses,
            not wheels,
            f"no layer holds a wheel, {len(ours)} layers above the base {wheels[:3]}",
        )
    else:
        print("  (vfs: layers are full copies, the per-layer wheel check needs overlay)")


def check_versions(engine: Engine, misses: list[str]) -> None:
    """The image holds exactly the locked versions."""
    locked = dict(
        _pin(line)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if re.match(r"^[A-Za-z0-9]", line)
    )
    listed = engine.podman("exec", CONTAINER, "python", "-m", "pip", "list", "--format=json")
    installed = {
        _pin(f"{item['name']}=={item['version']}")[0]: item["version"]
        for item in json.loads(listed.stdout)
    }
    differ = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    _expect(misses, not differ, f"the image has the {len(locked)} locked versions ({differ})")


def _pin(line: str) -> tuple[str, str]:
    name, _, version = line.split(" ")[0].partition("==")
    return re.sub(r"[-_.]+", "-", name).lower(), version


def build(engine: Engine, run_dir: Path) -> None:
    # pip in the build trusts this machine's CA bundle: build secrets, for the RUN steps only.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    pip_conf = run_dir / "pip.conf"
    pip_conf.write_text("[global]\ncert = /run/secrets/build-ca.crt\n")
    engine.stream(
        "buildah",
        "bud",
        "--format=docker",  # the OCI format drops HEALTHCHECK
        "--pull=never",
        "--layers",  # a layer per instruction, as Docker builds it
        "--network=host",
        "--runtime=runc",
        "--cgroup-manager=cgroupfs",
        f"--secret=id=pip.conf,src={pip_conf}",
        f"--secret=id=build-ca.crt,src={bundle}",
        f"--tag={TAG}",
        f"--file={ROOT / 'Dockerfile'}",
        str(ROOT),
        show=lambda line: "STEP " in line[:16] or line.startswith("COMMIT"),
    )


def report_image(engine: Engine) -> int:
    size = int(engine.podman("image", "inspect", "--format", "{{.Size}}", TAG).stdout.strip())
    print(f"image-test: image {TAG}: {_mb(size)}; layers (newest first):")
    history = engine.podman(
        "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", TAG
    ).stdout
    for line in history.splitlines():
        layer_size, _, created_by = line.partition("\t")
        print(f"  {layer_size:>10}  {created_by.strip()[:110]}")
    return size


def run_container(
    engine: Engine, pod: Pod, mongo: MongoServer, redis: RedisServer, misses: list[str]
) -> list[str]:
    token = secrets.token_hex(24)
    secret_values = {
        "MONGO_URL": f"mongodb://{HOST_FROM_CONTAINER}:{mongo.port}/?directConnection=true",
        "REDIS_URL": f"redis://{HOST_FROM_CONTAINER}:{redis.port}/0",
        "API_TOKENS": token,
        "CURSOR_SECRET": secrets.token_hex(24),
        "CURSOR_SECRET_PREVIOUS": "",  # optional in the manifest: no rotation under way
    }
    missing = set(pod.secret_env) - set(secret_values)
    if missing:
        raise Check(f"deployment.yaml asks for secrets this test cannot fill: {sorted(missing)}")
    # Like a Secret: values in a file only root can read, not on the command line.
    secret_file = engine.run_dir / "secret.env"
    secret_file.touch(mode=0o600)
    secret_file.write_text("".join(f"{name}={secret_values[name]}\n" for name in pod.secret_env))
    published = {name: free_port() for name in pod.ports}
    args = [
        "run",
        "--detach",
        f"--name={CONTAINER}",
        "--network=slirp4netns:allow_host_loopback=true",
        *(f"--publish=127.0.0.1:{published[n]}:{p}" for n, p in pod.ports.items()),
        *podman_security_args(pod),
        *(f"--env={key}={value}" for key, value in pod.env.items()),
        f"--env-file={secret_file}",
        TAG,
    ]
    engine.podman(*args)
    host_port = {pod.ports[name]: port for name, port in published.items()}

    def url(port: int, path: str) -> str:
        return f"http://127.0.0.1:{host_port[port]}{path}"

    started = time.monotonic()
    _wait_status(url(pod.startup.port, pod.startup.path), 200, pod.startup_seconds, engine)
    print(f"  started: {pod.startup.path} answered 200 after {time.monotonic() - started:.1f} s")
    _wait_status(url(pod.readiness.port, pod.readiness.path), 200, 30, engine)
    _expect(misses, _http(url(pod.liveness.port, pod.liveness.path))[0] == 200, "liveness 200")
    _expect(misses, _http(url(pod.readiness.port, pod.readiness.path))[0] == 200, "readiness 200")

    api = pod.ports["http"]
    body = json.dumps({"name": "Image Test", "email": "image-test@example.com"}).encode()
    json_type = {"Content-Type": "application/json"}
    status, _ = _http(url(api, "/users"), "POST", body, json_type)
    _expect(misses, status == 401, f"a write without a token: 401 (got {status})")
    status, created = _http(
        url(api, "/users"), "POST", body, {**json_type, "Authorization": f"Bearer {token}"}
    )
    _expect(misses, status == 201, f"a write with a token: 201 (got {status})")
    user = json.loads(created)["id"]
    _expect(misses, _http(url(api, f"/users/{user}"))[0] == 200, "the created user reads back: 200")
    status, scraped = _http(url(pod.metrics_port, "/metrics"))
    _expect(
        misses,
        status == 200 and b"http_requests_total" in scraped,
        f"metrics on the metrics port {pod.metrics_port}: 200 (got {status})",
    )
    status, _ = _http(url(api, "/metrics"))
    _expect(misses, status != 200, f"no metrics on the API port {api} (got {status})")

    check_versions(engine, misses)
    check_healthcheck(engine, misses)
    check_users(engine, pod, misses)
    return stop(engine, pod, misses)


def check_healthcheck(engine: Engine, misses: list[str]) -> None:
    """The image's own HEALTHCHECK command (no systemd here: podman's timer never fires)."""
    inspected: dict[str, Any] = image_json(engine, TAG)
    health = inspected.get("Healthcheck") or (inspected.get("Config") or {}).get("Healthcheck")
    if not (health and health.get("Test")):
        raise Check(f"the image has no HEALTHCHECK (docker format): {sorted(inspected)}")
    test: list[str] = health["Test"]
    print(f"  the image's HEALTHCHECK: {test}")
    if test[0] == "CMD-SHELL":
        command = ["/bin/sh", "-c", test[1]]
    else:
        command = test[1:] if test[0] == "CMD" else test
    result = engine.podman("exec", CONTAINER, *command, check=False)
    _expect(misses, result.returncode == 0, f"HEALTHCHECK passes (exit {result.returncode})")
    # It follows PORT: pointed at a port nothing listens on, it must fail.
    result = engine.podman("exec", "--env=PORT=9", CONTAINER, *command, check=False)
    _expect(misses, result.returncode != 0, "HEALTHCHECK follows PORT (fails with PORT=9)")


def check_users(engine: Engine, pod: Pod, misses: list[str]) -> None:
    root_pid = int(engine.podman("inspect", "--format", "{{.State.Pid}}", CONTAINER).stdout)
    pids = _host_pids(root_pid)
    wrong = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            uids, gids = _ids(pid)
            if set(uids) != {pod.uid} or set(gids) != {pod.gid}:
                wrong.append((pid, uids, gids))
    workers = int(pod.env.get("WEB_CONCURRENCY", "1"))
    _expect(
        misses, len(pids) >= 1 + workers, f"{len(pids)} processes: gunicorn and {workers} workers"
    )
    _expect(misses, not wrong, f"every process runs as {pod.uid}:{pod.gid} ({wrong})")


def stop(engine: Engine, pod: Pod, misses: list[str]) -> list[str]:
    signalled = time.monotonic()
    engine.podman("kill", "--signal=TERM", CONTAINER)
    deadline = signalled + pod.grace_seconds
    while time.monotonic() < deadline:
        state = engine.podman(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", CONTAINER
        ).stdout.split()
        if state[0] in ("exited", "stopped"):
            break
        time.sleep(0.2)
    else:
        raise Check(f"still running {pod.grace_seconds} s after SIGTERM")
    elapsed = time.monotonic() - signalled
    exit_code = int(state[1])
    _expect(
        misses,
        exit_code == 0,
        f"SIGTERM: exit {exit_code} after {elapsed:.1f} s (limit {pod.grace_seconds} s)",
    )
    logs = engine.podman("logs", CONTAINER)
    return (logs.stdout + logs.stderr).splitlines()


def check_log(lines: list[str], misses: list[str]) -> None:
    bad = [line for line in lines if BAD_LINE.search(line)]
    print(f"image-test: container log, {len(lines)} lines")
    for line in bad[:20]:
        print(f"  {line}")
    _expect(misses, not bad, "no traceback or error line in the container log")


def main() -> int:
    if os.geteuid() != 0:
        print("image-test: run as root (buildah and podman with root storage)", file=sys.stderr)
        return 2
    timings = Timings()
    cache_dir = Path(os.environ.get("IMAGE_CACHE_DIR", "/var/cache/user-service-image"))
    run_dir = Path(tempfile.mkdtemp(prefix="user-service-image-", dir="/var/tmp"))
    disk = DiskWatch(run_dir)
    engine = Engine(run_dir, cache_dir)
    servers: list[MongoServer | RedisServer] = []
    failure: str | None = None
    misses: list[str] = []
    cold = False
    size = 0
    try:
        pod = load_pod()
        base = base_image_name(ROOT / "Dockerfile")
        with timings.step("stand-in base"):
            cold = engine.ensure_base(f"localhost/{base}")
        print(f"image-test: storage driver {engine.driver}")
        with timings.step("build (buildah bud, unmodified Dockerfile)"):
            build(engine, run_dir)
        size = report_image(engine)
        with timings.step("image contents"):
            check_image_contents(engine, f"localhost/{base}", misses)
        with timings.step("SecantusDB and redis-server on loopback"):
            mongo = MongoServer(run_dir / "secantus")
            redis = RedisServer(run_dir / "redis")
            for server in (mongo, redis):
                server.start()
                servers.append(server)
        with timings.step("run as the pod, probe, SIGTERM"):
            lines = run_container(engine, pod, mongo, redis, misses)
            check_log(lines, misses)
    except (Check, RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
        failure = str(error)
        logs = engine.podman("logs", "--tail=40", CONTAINER, check=False)
        if logs.returncode == 0:
            print(f"image-test: the container's log (last lines):\n{logs.stdout}{logs.stderr}")
    finally:
        with timings.step("stop SecantusDB and redis-server"):
            for server in servers:
                server.stop()
        with timings.step("remove containers, images and storage"):
            engine.remove()
        disk.stop()
    total = time.monotonic() - timings.started
    # Reported, not asserted: on a shared machine the time says more about the neighbours.
    limit = COLD_LIMIT_SECONDS if cold else WARM_LIMIT_SECONDS
    print(
        f"image-test: {'cold' if cold else 'warm'} run, {total:.1f} s in all "
        f"(target under {limit} s; load average {os.getloadavg()[0]:.1f}):"
    )
    for name, seconds in timings.steps:
        print(f"  {seconds:6.1f} s  {name}")
    if size:
        print(f"image-test: image size {_mb(size)} (limit {_mb(SIZE_LIMIT_BYTES)})")
    print(f"image-test: disk used while running, at most {_mb(disk.peak)} (limit 1.5 GB)")
    leftover = _leftover(run_dir)
    if failure is None and misses:
        failure = f"{len(misses)} missed: " + "; ".join(misses)
    if failure is None and disk.peak > DISK_LIMIT_BYTES:
        failure = f"used {_mb(disk.peak)} of disk, more than 1.5 GB"
    if failure is None and size > SIZE_LIMIT_BYTES:
        failure = f"the image is {_mb(size)}, more than {_mb(SIZE_LIMIT_BYTES)}"
    if failure is None and leftover:
        failure = f"left behind: {leftover}"
    if failure is not None:
        print(f"image-test: FAILED: {failure}", file=sys.stderr)
        return 1
    print("image-test: passed")
    return 0


def _leftover(run_dir: Path) -> str:
    if run_dir.exists():
        return str(run_dir)
    with open("/proc/self/mounts") as mounts:
        stuck = [line.split()[1] for line in mounts if str(run_dir) in line]
    return ", ".join(stuck)


if __name__ == "__main__":
    sys.exit(main())
