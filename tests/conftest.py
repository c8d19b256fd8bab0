"""Session fixtures start the real servers; every test gets its own database name.
The helpers these fixtures (and the tests) use live in tests/helpers/."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis.configuration import set_hypothesis_home_dir

from service.app import create_app
from service.settings.loading import load_settings
from service.settings.model import MongoDriver, Settings
from service.storage.mongo import MONGO_LISTENERS, Mongo
from tests.helpers.app import CURSOR_SECRET, AiohttpClient, Client, ready_client
from tests.helpers.mongo import CommandRecorder, FailPoint
from tests.helpers.servers import MongoServer, RedisServer
from tests.helpers.tools import in_ci, require_command

_HYPOTHESIS_HOME = pytest.StashKey[Path]()
_DRIVERS_RUN = pytest.StashKey[dict[str, int]]()
DRIVERS: tuple[MongoDriver, ...] = ("motor", "pymongo")


def selected_drivers() -> tuple[MongoDriver, ...]:
    """Both drivers, unless SERVICE_TEST_DRIVERS (comma-separated) or MONGO_DRIVER narrows
    the run locally; in CI a narrowed run is refused (it would hide one driver's breakage)."""
    raw = os.environ.get("SERVICE_TEST_DRIVERS") or os.environ.get("MONGO_DRIVER") or ""
    names = [name.strip() for name in raw.split(",") if name.strip()] or list(DRIVERS)
    chosen = tuple(driver for driver in DRIVERS if driver in names)
    if unknown := sorted(set(names) - set(DRIVERS)):
        raise pytest.UsageError(f"unknown MongoDB driver {unknown}: expected {DRIVERS}")
    if in_ci() and chosen != DRIVERS:
        raise pytest.UsageError(
            f"CI runs the database tests on every driver {DRIVERS}, not only {chosen}: "
            "unset SERVICE_TEST_DRIVERS and MONGO_DRIVER"
        )
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis (under schemathesis) caches constants and Unicode tables: not in the checkout."""
    home = Path(tempfile.mkdtemp(prefix="user-service-hypothesis-"))
    config.stash[_HYPOTHESIS_HOME] = home
    set_hypothesis_home_dir(home)
    counts: dict[str, int] = {driver: 0 for driver in selected_drivers()}
    config.stash[_DRIVERS_RUN] = counts
    config.addinivalue_line(
        "markers", "one_driver: builds a service but its subject is not the driver (one run)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that builds a service (through `test_env`) runs once per driver."""
    if "mongo_driver" not in metafunc.fixturenames:
        return
    drivers = selected_drivers()
    if metafunc.definition.get_closest_marker("one_driver"):
        drivers = drivers[:1]
    metafunc.parametrize("mongo_driver", drivers, scope="function")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Count the tests each driver passed, for the check at the end of the session."""
    report: pytest.TestReport = yield
    callspec = getattr(item, "callspec", None)
    driver = callspec.params.get("mongo_driver") if callspec is not None else None
    if report.when == "call" and report.passed and driver is not None:
        item.config.stash[_DRIVERS_RUN][driver] += 1
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a driver whose database tests all skipped (or never ran) fails the run."""
    counts = session.config.stash.get(_DRIVERS_RUN, {})
    if in_ci() and any(counts.values()) and not all(counts.values()):
        missing = [driver for driver, passed in counts.items() if not passed]
        session.config.get_terminal_writer().line(
            f"FAILED: no database test passed on driver(s) {missing} (CI runs every driver)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    set_hypothesis_home_dir(None)
    shutil.rmtree(config.stash[_HYPOTHESIS_HOME], ignore_errors=True)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_command("redis-server", "redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_mongo_server(tmp_path: Path) -> Iterator[MongoServer]:
    """A server this test alone may stop and restart."""
    server = MongoServer(tmp_path / "secantus")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test alone may stop and restart."""
    require_command("redis-server", "redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def test_env(mongo_server: MongoServer, mongo_driver: MongoDriver) -> dict[str, str]:
    """The environment a test service starts with; tests may add to it before `settings`.
    `mongo_driver` is parametrized by pytest_generate_tests: each such test runs per driver."""
    return {
        "SERVICE_ENV": "test",
        "MONGO_DRIVER": mongo_driver,
        "MONGO_URL": mongo_server.url,
        "MONGO_DB": f"t_{uuid.uuid4().hex[:16]}",
        "CURSOR_SECRET": CURSOR_SECRET,
    }


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    settings = load_settings(test_env)
    # A per-test app name lets fail points target this test's client alone.
    return dataclasses.replace(
        settings, mongo=dataclasses.replace(settings.mongo, app_name=f"t-{uuid.uuid4().hex[:12]}")
    )


@pytest.fixture
def recorder(settings: Settings) -> CommandRecorder:
    return CommandRecorder(settings.mongo.database)


@pytest.fixture
def app(settings: Settings, recorder: CommandRecorder) -> web.Application:
    app = create_app(settings)
    app[MONGO_LISTENERS].append(recorder)
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app: web.Application) -> Client:
    return await ready_client(aiohttp_client, app)


@pytest.fixture
async def mongo(settings: Settings) -> AsyncIterator[Mongo]:
    """Direct database access for arranging data and asserting what was (not) written."""
    mongo = Mongo(dataclasses.replace(settings.mongo, app_name="tests-direct"))
    yield mongo
    await mongo.client.drop_database(settings.mongo.database)
    await mongo.close()


@pytest.fixture
async def fail_point(mongo: Mongo) -> AsyncIterator[FailPoint]:
    point = FailPoint(mongo)
    yield point
    await point.off()
