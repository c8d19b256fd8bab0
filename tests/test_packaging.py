"""The installed package runs outside the checkout: its default configuration ships inside it.

The wheel is built from the worktree as the Dockerfile builds it, installed into a fresh
venv (the service's dependencies come from the dev venv, so nothing is downloaded but the
build backend), and the console script is run from a directory that has no config/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `user-service` script of a fresh venv holding only the built wheel."""
    base = tmp_path_factory.mktemp("packaging")
    # What the Dockerfile copies, and nothing else: a build leaves no build/ in the checkout.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "service", source / "service",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
         str(source)],
        check=True,
        timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("user_service-*.whl")
    target = base / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    # The dependencies, without the checkout: a plain path line does not run the dev
    # venv's own .pth files, so its editable install of the service stays out.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "dev-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return target / "bin" / "user-service"


def _run(script: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "PYTHON"))}
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_installed_script_reads_the_configuration_it_ships(
    installed: Path, tmp_path: Path
) -> None:
    # A bad value is reported by name: the packaged default.toml was found and read.
    result = _run(installed, tmp_path, PORT="abc")
    assert result.returncode == 2
    expected = "user-service: configuration error: PORT: expected an integer, got 'abc'"
    assert result.stderr.strip() == expected
    document = _run(installed, tmp_path, "openapi", SERVICE_ENV="production",
                    MONGO_URL="mongodb://db:27017", REDIS_URL="redis://cache:6379/0",
                    API_TOKENS="a-long-enough-write-token",
                    CURSOR_SECRET="a-long-enough-cursor-secret")  # fmt: skip
    assert document.returncode == 0, document.stderr
    assert json.loads(document.stdout)["openapi"].startswith("3.1")
    where = subprocess.run(
        [str(installed.parent / "python"), "-c", "import service; print(service.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert str(ROOT) not in where  # the wheel's copy, not the checkout's


def test_service_config_dir_still_overrides(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    result = _run(installed, tmp_path, "openapi", SERVICE_CONFIG_DIR=str(empty))
    assert result.returncode == 2
    assert f"no default.toml in {empty}" in result.stderr
