"""buildah and podman as this machine needs them, in storage of their own, and the stand-in base.

Machine facts (found when this was first tried): podman's default open-file limit exceeds the
host's, so nofile/nproc are set here; crun refuses the host's mixed cgroup layout, so runc
with the cgroupfs manager; overlay works, vfs when overlay mounts are refused; no systemd.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The stand-in for the Dockerfile's FROM image: registries other than the package
# registries are unreachable here. Its key names everything that shapes it.
BASE_SUITE = "trixie"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# Debian's marker makes pip refuse to install into the system Python, which the real base's
# Python (built from source under /usr/local) does not carry. The real base has pip but no
# setuptools or wheel (python's images dropped them with 3.12): whatever Debian's pip drew in
# goes, so that a build step needing them fails here as it would there.
BASE_TWEAKS = (
    "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED",
    # As in the official image: pip vendors its own packaging, and nothing else installs one
    # (our runtime needs packaging 26 for opentelemetry-instrumentation).
    "dpkg --purge --force-depends python3-setuptools python3-pkg-resources python3-wheel"
    " python3-packaging",
    "apt-get clean",
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log",
)


def base_key() -> str:
    facts = [BASE_SUITE, BASE_MIRROR, "minbase", *BASE_PACKAGES, *BASE_TWEAKS]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def base_image_name(dockerfile: Path) -> str:
    """The one external image the Dockerfile builds FROM (stage names excluded)."""
    stages: set[str] = set()
    images: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            if match.group(1).lower() not in stages:
                images.add(match.group(1))
            if match.group(2):
                stages.add(match.group(2).lower())
    if len(images) != 1:
        raise RuntimeError(f"expected one base image in {dockerfile}, found {sorted(images)}")
    return images.pop()


class Engine:
    """buildah/podman with configuration and storage under `run_dir`, all removed by `remove`.

    The stand-in base lives in a read-only image store in the cache (`additionalimagestores`),
    so a warm run neither imports nor deletes it.
    """

    def __init__(self, run_dir: Path, cache_dir: Path) -> None:
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.storage = run_dir / "storage"
        self.driver = "overlay"
        self.env = dict(os.environ)
        self._write_config()

    @property
    def base_store(self) -> Path:
        return self.cache_dir / f"store-{self.driver}-{BASE_SUITE}-{base_key()}"

    def _storage_conf(self, path: Path, graphroot: Path, stores: Sequence[Path]) -> None:
        listed = ", ".join(f'"{store}"' for store in stores)
        path.write_text(
            "[storage]\n"
            f'driver = "{self.driver}"\n'
            f'graphroot = "{graphroot}"\n'
            f'runroot = "{self.run_dir / "runroot"}"\n'
            "[storage.options]\n"
            f"additionalimagestores = [{listed}]\n"
        )

    def _write_config(self) -> None:
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
        nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nproc = 4096 if nproc_hard == resource.RLIM_INFINITY else min(nproc_hard, 4096)
        conf = self.run_dir / "containers.conf"
        conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.run_dir / "events.log"}"\n'
            f'tmp_dir = "{self.run_dir / "libpod-tmp"}"\n'
        )
        storage = self.run_dir / "storage.conf"
        self._storage_conf(storage, self.storage, [self.base_store])
        self.env.update(
            CONTAINERS_CONF=str(conf),
            CONTAINERS_STORAGE_CONF=str(storage),
            BUILDAH_RUNTIME="runc",
            TMPDIR=str(self.run_dir / "tmp"),
        )
        (self.run_dir / "tmp").mkdir(exist_ok=True)

    def run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args[:3])}… failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def stream(self, tool: str, *args: str, show: Callable[[str], bool]) -> None:
        """Run a long command, printing the lines `show` picks with the seconds since start."""
        started = time.monotonic()
        output: list[str] = []
        with subprocess.Popen(
            [tool, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                output.append(line)
                if show(line):
                    print(
                        f"  {time.monotonic() - started:5.1f} s  {line.rstrip()[:100]}", flush=True
                    )
        if process.returncode != 0:
            raise RuntimeError(
                f"{tool} {args[0]} failed ({process.returncode}):\n" + "".join(output[-60:])
            )

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("podman", "--cgroup-manager=cgroupfs", "--runtime=runc", *args, check=check)

    def ensure_base(self, name: str) -> bool:
        """The stand-in base as `name` in the cached store; built when missing (True: cold).

        vfs when overlay is refused, both for the store and the run's own storage.
        """
        for driver in ("overlay", "vfs"):
            self.driver = driver
            self._write_config()
            if (self.base_store / "complete").exists():
                return False
        self.driver = "overlay"
        self._write_config()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.cache_dir.glob("store-*"):  # another package list: never used again
            _remove_tree(stale)
        for stale in self.cache_dir.glob("base-*.tar"):  # the cache's earlier layout
            stale.unlink()
        started = time.monotonic()
        rootfs = self.run_dir / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(rootfs),
                BASE_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for command in BASE_TWEAKS:
            subprocess.run(["chroot", str(rootfs), "sh", "-c", command], check=True)
        print(f"image-test: debootstrap took {time.monotonic() - started:.0f} s")
        try:
            self._import(rootfs, name)
        except RuntimeError as error:
            print(f"image-test: overlay refused, using vfs: {str(error)[-300:]}")
            _remove_tree(self.base_store)
            self.driver = "vfs"
            self._write_config()
            self._import(rootfs, name)
        _remove_tree(rootfs)
        print(f"image-test: stand-in base built in {time.monotonic() - started:.0f} s")
        return True

    def _import(self, rootfs: Path, name: str) -> None:
        store_conf = self.run_dir / "store.conf"
        self._storage_conf(store_conf, self.base_store, [])
        env = {**self.env, "CONTAINERS_STORAGE_CONF": str(store_conf)}
        with subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
            stdout=subprocess.PIPE,
        ) as tar:
            self.run(
                "podman",
                "import",
                "--change=ENV LANG=C.UTF-8",
                '--change=CMD ["python3"]',
                "-",
                name,
                env=env,
                stdin=tar.stdout.fileno() if tar.stdout else None,
            )
        if tar.returncode != 0:
            raise RuntimeError(f"tar of the stand-in base failed ({tar.returncode})")
        # The build would fail on its first layer if the driver cannot mount here.
        self.run("podman", "image", "mount", name, env=env)
        self.run("podman", "image", "unmount", name, env=env)
        (self.base_store / "complete").touch()

    def remove(self) -> None:
        """Everything the run created: containers, images, storage, configuration."""
        # Containers first (their conmon and network); images and layers go with the directory.
        self.podman("rm", "--all", "--force", "--time=0", check=False)
        self.run("buildah", "rm", "--all", check=False)
        _remove_tree(self.run_dir)


def _remove_tree(directory: Path) -> None:
    """rm -rf that first detaches any mount below `directory` (never descends into one)."""
    prefix = str(directory) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


def image_json(engine: Engine, name: str) -> dict[str, object]:
    inspected: Sequence[dict[str, object]] = json.loads(
        engine.podman("image", "inspect", name).stdout
    )
    return inspected[0]
