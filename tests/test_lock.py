"""The lock files against setup.cfg, and the Dockerfile's use of them (the image itself is
checked by `make image-test`, which builds and runs it)."""

from __future__ import annotations

import configparser
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT


def _locked(name: str) -> dict[str, str]:
    """name -> version of every pin in a lock file; each pin must carry hashes."""
    text = (ROOT / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if match:
            assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _requirements(section: str, key: str) -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config[section][key].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_runtime_lock_satisfies_install_requires() -> None:
    locked = _locked("requirements.lock")
    for requirement in _requirements("options", "install_requires"):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, setup.cfg wants {requirement}"
        )


def test_dev_lock_satisfies_the_dev_extra_and_agrees_with_the_runtime_lock() -> None:
    dev = _locked("requirements-dev.lock")
    for requirement in _requirements("options.extras_require", "dev"):
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{requirement} is not in requirements-dev.lock: run `make lock`"
        assert requirement.specifier.contains(dev[name], prereleases=True)
    runtime = _locked("requirements.lock")
    assert {name: dev.get(name) for name in runtime} == runtime  # CI tests what the image ships


def test_dockerfile_installs_the_lock_and_keeps_no_wheels() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # A parser directive makes Docker fetch a frontend image before building.
    assert not re.match(r"#\s*syntax\s*=", dockerfile, re.IGNORECASE)
    assert "--require-hashes" in dockerfile
    assert "-r requirements.lock" in dockerfile
    # A COPY of the wheels stays in its layer even when a later RUN deletes them.
    assert not re.search(r"^COPY --from=\S+ /wheels", dockerfile, re.MULTILINE)
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\nCMD", 1)[0]
    assert "PORT" in healthcheck  # follows the server's port, not a fixed 8000
