"""Property-based fuzzing of every documented operation, driven by the OpenAPI document.

schemathesis generates valid and invalid requests from the document `/openapi.json` serves
(`build_document(ENDPOINTS)`; test_orders_api checks the two are equal) and sends them over
real HTTP to the real app, with tokens configured, on SecantusDB. Every response must be no
5xx, with a documented status, media type, headers and body; every error must be
problem+json; invalid input must be refused, and valid input must not get a 400.

The run is bounded and repeatable: a fixed seed, a fixed number of examples per operation,
and no example database (conftest.py keeps Hypothesis' caches out of the checkout). The
app runs on an event loop in its own thread, because schemathesis sends its requests with
a blocking client from the test's thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import hypothesis
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, Response
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.cursors import Cursors
from service.db import MONGO
from service.schemas import INVISIBLE_NAME
from service.seed import seed, seed_id
from tests.api import DOCUMENT
from tests.conftest import CURSOR_SECRET

T = TypeVar("T")
OperationCase = Case[APIOperation[Any, Any, Any, Any]]
TOKEN = "fuzz-writer-token-0123456789"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}
SEEDED_USERS, SEEDED_ORDERS_PER_USER = 3, 2
EXAMPLES_PER_OPERATION = 100

SCHEMA = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "seed": 20260109,
            "generation": {"mode": "all"},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": 10,
        }
    ),
)


_USER_IDS = st.sampled_from([seed_id("user", n) for n in range(SEEDED_USERS)])
_ORDER_IDS = st.sampled_from(
    [seed_id("order", n, i) for n in range(SEEDED_USERS) for i in range(SEEDED_ORDERS_PER_USER)]
)
# The fuzzer cannot sign a cursor, and a made-up one never gets past the MAC check: these
# are signed with the suite's secret, which the app under test is configured with.
encode_cursor = Cursors(CURSOR_SECRET.encode()).encode
_CURSORS = {
    "/users": st.builds(lambda user_id: encode_cursor({"id": user_id}), _USER_IDS),
    "/users/{user_id}/orders": st.builds(
        lambda t, order_id: encode_cursor({"t": t, "id": order_id}),
        st.integers(0, 2**45),
        _ORDER_IDS,
    ),
}


@SCHEMA.hook
def before_generate_path_parameters(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Half the time, aim at a resource that exists, so handlers get past their 404."""
    assert context.operation is not None
    path = context.operation.path
    if "{order_id}" in path:
        return st.one_of(strategy, st.fixed_dictionaries({"order_id": _ORDER_IDS}))
    if "{user_id}" in path:
        return st.one_of(strategy, st.fixed_dictionaries({"user_id": _USER_IDS}))
    return strategy


@SCHEMA.hook
def before_generate_query(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Half the time, page on from a real position, so paging gets past its 400."""
    assert context.operation is not None
    cursors = _CURSORS.get(context.operation.path)
    if cursors is None:
        return strategy
    resumed = st.tuples(strategy, cursors).map(
        lambda pair: {**pair[0], "after": pair[1]} if isinstance(pair[0], dict) else pair[0]
    )
    return st.one_of(strategy, resumed)


def problem_json_errors(ctx: CheckContext, response: Response, case: OperationCase) -> bool | None:
    """Every error the service answers is problem+json, whatever the document says."""
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.split(";")[0] == "application/problem+json", (
            f"{response.status_code} answered as {content_type!r}"
        )
    return None


def valid_requests_are_not_rejected(
    ctx: CheckContext, response: Response, case: OperationCase
) -> bool | None:
    """A request the document calls valid gets no 400, unless its cursor is made up.

    A cursor is integrity-checked, so one the fuzzer makes up is rightly refused, and a
    name of invisible characters only matches the pattern but not the rule in its
    description; any other 400 for a valid request means the document promises more than
    the service accepts.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    errors = response.json().get("errors", [])
    if errors and all(error["detail"] == INVISIBLE_NAME for error in errors):
        return None  # the document states this rule in words: a pattern cannot (schemas.py)
    pointers = {error["pointer"] for error in errors}
    refused = pointers - {"after"} - _headers_off_pattern(case)
    assert pointers, f"a valid request was refused: {response.text}"
    assert not refused, f"a valid request was refused: {response.text}"
    return None


def _headers_off_pattern(case: OperationCase) -> set[str]:
    """Headers the case sent against their declared pattern.

    schemathesis' coverage phase makes header values from letters and digits only, and
    where a pattern needs more (an entity tag's quotes) it sends a placeholder such as
    `0` while still calling the case positive.
    """
    operation = DOCUMENT["paths"][case.path][case.method.lower()]
    sent: dict[str, Any] = dict(case.headers or {})
    return {
        parameter["name"]
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header"
        and parameter["name"] in sent
        and "pattern" in parameter["schema"]
        and not re.search(parameter["schema"]["pattern"], str(sent[parameter["name"]]))
    }


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    problem_json_errors,
    valid_requests_are_not_rejected,
]


class ThreadedService:
    """The app on a free loopback port, served by an event loop in its own thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-service")
        self._runner = web.AppRunner(app, access_log=None)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def start(self) -> str:
        self._thread.start()
        self.run(self._runner.setup())
        self.run(web.TCPSite(self._runner, "127.0.0.1", 0).start())
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        try:
            self.run(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


async def _ready_and_seeded(app: web.Application) -> None:
    mongo = app[MONGO]
    for _ in range(200):
        if mongo.indexes_ready:
            break
        await asyncio.sleep(0.05)
    assert mongo.indexes_ready, "indexes were not created within 10 s"
    await seed(mongo, SEEDED_USERS, SEEDED_ORDERS_PER_USER)


async def _drop_database(app: web.Application) -> None:
    mongo = app[MONGO]
    await mongo.client.drop_database(mongo.settings.database)


@pytest.fixture
def test_env(test_env: dict[str, str]) -> dict[str, str]:
    """Writes need a token, as in production: the fuzzer sends it on every request."""
    return {**test_env, "API_TOKENS": TOKEN}


@pytest.fixture
def base_url(app: web.Application) -> Iterator[str]:
    service = ThreadedService(app)
    url = service.start()
    try:
        service.run(_ready_and_seeded(app))
        yield url
        service.run(_drop_database(app))
    finally:
        service.stop()


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_survives_generated_requests(case: OperationCase, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=AUTHORIZATION, checks=CHECKS)
