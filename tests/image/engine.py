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
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# Debian's marker makes pip refuse to install into the system Python, which the real base's
# Python (built from source under /usr/local) does not carry.
BASE_TWEAKS = (
    "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED",
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
    """buildah/podman with configuration and storage under `run_dir`, all removed by `remove`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.storage = run_dir / "storage"
        self.driver = "overlay"
        self.env = dict(os.environ)
        self._write_config()

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
        storage.write_text(
            "[storage]\n"
            f'driver = "{self.driver}"\n'
            f'graphroot = "{self.storage}"\n'
            f'runroot = "{self.run_dir / "runroot"}"\n'
        )
        self.env.update(
            CONTAINERS_CONF=str(conf),
            CONTAINERS_STORAGE_CONF=str(storage),
            BUILDAH_RUNTIME="runc",
            TMPDIR=str(self.run_dir / "tmp"),
        )
        (self.run_dir / "tmp").mkdir(exist_ok=True)

    def run(
        self, tool: str, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool, *args], env=self.env, capture_output=True, text=True, timeout=timeout
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

    def import_base(self, tarball: Path, name: str) -> None:
        """Import the cached root filesystem as `name`; vfs when overlay mounts are refused."""
        changes = ["--change=ENV LANG=C.UTF-8", '--change=CMD ["python3"]']
        result = self.podman("import", *changes, str(tarball), name, check=False)
        if result.returncode != 0 and "overlay" in (result.stderr + result.stdout).lower():
            print(f"image-test: overlay refused, using vfs: {result.stderr.strip()[-300:]}")
            self._remove_storage()
            self.driver = "vfs"
            self._write_config()
            result = self.podman("import", *changes, str(tarball), name, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"podman import failed:\n{result.stderr}")
        # A test of the mounts: the build would otherwise fail on the first layer.
        mounted = self.podman("image", "mount", name, check=False)
        if mounted.returncode != 0 and self.driver == "overlay":
            print(f"image-test: overlay mount refused, using vfs: {mounted.stderr.strip()}")
            self._remove_storage()
            self.driver = "vfs"
            self._write_config()
            self.import_base(tarball, name)
            return
        self.podman("image", "unmount", name, check=False)

    def _remove_storage(self) -> None:
        # Containers first (their conmon and network); images and layers go with the directory.
        self.podman("rm", "--all", "--force", "--time=0", check=False)
        self.run("buildah", "rm", "--all", check=False)
        for mount in reversed(_mounts_under(self.run_dir)):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.storage, ignore_errors=True)
        shutil.rmtree(self.run_dir / "runroot", ignore_errors=True)

    def remove(self) -> None:
        """Everything the engine created: containers, images, storage, configuration."""
        self._remove_storage()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    with open("/proc/self/mounts") as mounts:
        return [
            fields[1]
            for fields in (line.split() for line in mounts)
            if fields[1].startswith(prefix)
        ]


def ensure_base(cache_dir: Path, work_dir: Path) -> tuple[Path, bool]:
    """The stand-in base as a tarball in the cache; built with debootstrap when missing.

    Returns the tarball and whether it was built now (a cold run).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"base-{BASE_SUITE}-{base_key()}.tar"
    if tarball.exists():
        return tarball, False
    for stale in cache_dir.glob("base-*.tar"):  # another package list: never used again
        stale.unlink()
    rootfs = work_dir / "rootfs"
    started = time.monotonic()
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
    partial = tarball.with_suffix(".partial")
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
        check=True,
    )
    partial.rename(tarball)
    shutil.rmtree(rootfs)
    print(f"image-test: stand-in base built in {time.monotonic() - started:.0f} s: {tarball}")
    return tarball, True


def image_json(engine: Engine, name: str) -> dict[str, object]:
    inspected: Sequence[dict[str, object]] = json.loads(
        engine.podman("image", "inspect", name).stdout
    )
    return inspected[0]
