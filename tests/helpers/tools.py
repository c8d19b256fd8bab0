"""External tools the tests drive (curl, chromium, promtool...): found, or skipped locally."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_command(command: str, package: str) -> str:
    """The path of a tool a test drives: missing, the test skips locally and fails in CI."""
    path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed: `sudo apt-get install {package}`"
        if in_ci():
            pytest.fail(f"{message} (CI must not skip it)")
        pytest.skip(message)
    return path
