"""Fail when setup.cfg asks for a package the installed lock does not provide.

The venv is installed from requirements-dev.lock with --no-deps, so a requirement added to
setup.cfg without `make lock` would otherwise go missing silently until an import fails.
"""

import sys
from importlib.metadata import PackageNotFoundError, distribution, version

from packaging.requirements import Requirement


def main() -> int:
    problems = []
    for text in distribution("user-service").requires or []:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": "dev"}):
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            problems.append(f"{requirement}: not in the lock")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement}: the lock has {installed}")
    for problem in problems:
        print(f"requirements lock is stale: {problem} (run `make lock`)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
