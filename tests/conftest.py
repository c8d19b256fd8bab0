"""Session fixtures start the real servers; every test gets its own database name."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis.configuration import set_hypothesis_home_dir
from pymongo import monitoring

from service.app import create_app
from service.settings.loading import load_settings
from service.settings.model import MongoDriver, Settings
from service.storage.mongo import MONGO, MONGO_LISTENERS, Mongo
from tests.servers import MongoServer, RedisServer, in_ci, redis_server_binary

# The suite's paging secret: tests that sign cursors themselves use it (service/domain/cursors.py).
CURSOR_SECRET = "the-test-suite-cursor-secret"
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, web.Application]]]
Client = TestClient[Any, web.Application]
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


def require_command(command: str, package: str) -> str:
    """The path of a tool a test drives: missing, the test skips locally and fails in CI."""
    path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed: `sudo apt-get install {package}`"
        if in_ci():
            pytest.fail(f"{message} (CI must not skip it)")
        pytest.skip(message)
    return path


def _require_redis() -> None:
    require_command(redis_server_binary() or "redis-server", "redis-server")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _require_redis()
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


class CommandRecorder(monitoring.CommandListener):
    """Driver command events for one database, in the order the driver reported them."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.events: list[tuple[str, str, int]] = []
        self.commands: list[dict[str, Any]] = []  # the documents of the started ones
        self.failures: list[dict[str, Any]] = []  # the replies (or errors) of failed ones
        self._lock = threading.Lock()

    def _add(self, kind: str, name: str, request_id: int) -> None:
        with self._lock:
            self.events.append((kind, name, request_id))

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            with self._lock:
                self.commands.append(dict(event.command))
            self._add("started", event.command_name, event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.database_name == self.database:
            self._add("succeeded", event.command_name, event.request_id)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.database_name == self.database:
            with self._lock:
                self.failures.append(dict(event.failure))
            self._add("failed", event.command_name, event.request_id)

    def started_names(self) -> list[str]:
        with self._lock:
            return [name for kind, name, _ in self.events if kind == "started"]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.commands.clear()
            self.failures.clear()


@pytest.fixture
def recorder(settings: Settings) -> CommandRecorder:
    return CommandRecorder(settings.mongo.database)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` until it holds; fail the test with a clear message if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def app(settings: Settings, recorder: CommandRecorder) -> web.Application:
    app = create_app(settings)
    app[MONGO_LISTENERS].append(recorder)
    return app


async def ready_client(aiohttp_client: AiohttpClient, app: web.Application) -> Client:
    """A test client on the real app, once its indexes exist (uniqueness depends on them)."""
    client = await aiohttp_client(app)

    async def indexes_ready() -> bool:
        return app[MONGO].indexes_ready

    await wait_until(indexes_ready)
    return client


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


class FailPoint:
    """Arms SecantusDB's `failCommand` for one test and always switches it off afterwards."""

    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo

    async def arm(self, mode: str | dict[str, int], **data: Any) -> None:
        await self._mongo.client.admin.command(
            {"configureFailPoint": "failCommand", "mode": mode, "data": data}
        )

    async def off(self) -> None:
        await self._mongo.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.fixture
async def fail_point(mongo: Mongo) -> AsyncIterator[FailPoint]:
    point = FailPoint(mongo)
    yield point
    await point.off()
