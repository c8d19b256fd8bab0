"""Property-based fuzzing of every documented operation, driven by the OpenAPI document.

schemathesis generates valid and invalid requests from the document `/openapi.json` serves
(`build_document(ENDPOINTS, settings)`; test_orders_api checks the two are equal) and sends
them over real HTTP to the real app, with tokens configured, on SecantusDB. Every check
schemathesis has runs (its `--checks all`), plus one of ours: every response is no 5xx,
with a documented status, media type, headers and body; every error is problem+json;
invalid input is refused, valid input accepted, auth not ignored, a deleted user gone.
The stateful phase then follows the document's links (create -> get -> patch -> orders).

What the document says that a schema cannot check, the fuzzer is told here: an `after`
cursor has the format `user-cursor` or `order-cursor` (only a `next` value is one, so the
fuzzer signs real ones), and a valid request may still meet a state that refuses it: 409
(taken email), 412 (an ETag in If-Match that is not current) and 422 (an Idempotency-Key
reused with another body), each declared on its operations.

The run is bounded and repeatable: a fixed seed, a fixed number of examples per operation,
and no example database (conftest.py keeps Hypothesis' caches out of the checkout). The
app runs on an event loop in its own thread, because schemathesis sends its requests with
a blocking client from the test's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.domain.cursors import Cursors
from service.domain.validation import INVISIBLE_NAME
from service.http.openapi import build_document
from service.http.routes import ENDPOINTS
from service.seed import seed, seed_id
from service.settings.loading import load_settings
from service.storage.mongo import MONGO
from tests.helpers.app import CURSOR_SECRET

T = TypeVar("T")
OperationCase = Case[APIOperation[Any, Any, Any, Any]]
TOKEN = "fuzz-writer-token-0123456789"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}
SEEDED_USERS, SEEDED_ORDERS_PER_USER = 3, 2
EXAMPLES_PER_OPERATION = 100
STATEFUL_SCENARIOS, STEPS_PER_SCENARIO, MIN_STATEFUL_STEPS = 40, 6, 100
# schemathesis' defaults for valid requests, plus the refusals a valid request can meet.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]
# Its defaults for invalid ones, plus 414/431: a request line or header block too long for
# the parser is refused before any handler (a query parameter repeated 60 times).
REFUSED = [
    "400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "431",
    "5xx",
]  # fmt: skip

# What the app below serves: writes need the token (test_env), reads do not.
DOCUMENT = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test", "API_TOKENS": TOKEN}))
SCHEMA = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "seed": 20260109,
            "generation": {"mode": "all"},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ACCEPTED},
                "negative_data_rejection": {"expected-statuses": REFUSED},
            },
            "request-timeout": 10,
        }
    ),
)


_USER_IDS = st.sampled_from([seed_id("user", n) for n in range(SEEDED_USERS)])
_ORDER_IDS = st.sampled_from(
    [seed_id("order", n, i) for n in range(SEEDED_USERS) for i in range(SEEDED_ORDERS_PER_USER)]
)
# The formats the document gives `after`: cursors this service signed, at real positions,
# with the suite's secret, which the app under test is configured with.
encode_cursor = Cursors(CURSOR_SECRET.encode()).encode
schemathesis.openapi.format(
    "user-cursor", st.builds(lambda user_id: encode_cursor({"id": user_id}), _USER_IDS)
)
schemathesis.openapi.format(
    "order-cursor",
    st.builds(
        lambda t, order_id: encode_cursor({"t": t, "id": order_id}),
        st.integers(0, 2**45),
        _ORDER_IDS,
    ),
)


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


EMAIL_WITH_AFTER = {"pointer": "email", "detail": "not with after"}


def problem_json_errors(ctx: CheckContext, response: Response, case: OperationCase) -> bool | None:
    """Every error the service answers is problem+json, whatever the document says."""
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.split(";")[0] == "application/problem+json", (
            f"{response.status_code} answered as {content_type!r}"
        )
    return None


def valid_requests_are_accepted(
    ctx: CheckContext, response: Response, case: OperationCase
) -> bool | None:
    """schemathesis' positive_data_acceptance, less three 400s its generator cannot avoid.

    A name of invisible characters matches the pattern but not the rule its description
    states (no portable pattern can say it), and the coverage phase makes header values
    from letters and digits only, so where a pattern needs an entity tag's quotes it sends
    a placeholder such as `0` while still calling the case valid. `email` with `after` on
    GET /users is refused as its description says ("not with `after`"): OpenAPI's
    parameters cannot state that two of them exclude each other. Any other refusal of a
    valid request means the document promises more than the service accepts.
    """
    if response.status_code == 400:
        errors = response.json().get("errors", [])
        if errors and all(error["detail"] == INVISIBLE_NAME for error in errors):
            return None
        query = case.query or {}
        if errors == [EMAIL_WITH_AFTER] and "email" in query and "after" in query:
            return None
        pointers = {error["pointer"] for error in errors}
        if pointers and pointers <= _headers_off_pattern(case):
            return None
    return positive_data_acceptance(ctx, response, case)


def _headers_off_pattern(case: OperationCase) -> set[str]:
    """Headers the case sent against their declared pattern."""
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


def _all_checks() -> list[Any]:
    """Every check schemathesis registers (the CLI's `--checks all`), and ours; the
    acceptance check narrowed as its wrapper says."""
    registered: list[Any] = REGISTERED_CHECKS.get_all()
    assert len(registered) >= 14, REGISTERED_CHECKS.get_all_names()
    checks = [check for check in registered if check is not positive_data_acceptance]
    assert len(checks) == len(registered) - 1
    return [*checks, valid_requests_are_accepted, problem_json_errors]


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
    case.call_and_validate(base_url=base_url, headers=AUTHORIZATION, checks=_all_checks())


def test_linked_operations_survive_generated_sequences(base_url: str) -> None:
    """The stateful phase: scenarios that follow the links, every check on every step.

    Failures are collected, not raised, as schemathesis' own runner does: a scenario
    replayed against a server whose state moved on is not the same scenario, so Hypothesis
    may stop with FlakyStrategyDefinition; the steps run until then were all checked.
    """
    checks = _all_checks()
    failures: list[str] = []
    steps: list[str] = []

    class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: OperationCase) -> dict[str, Any]:
            return {"base_url": base_url, "headers": AUTHORIZATION}

        def validate_response(
            self,
            response: Response,
            case: OperationCase,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            steps.append(f"{case.method} {case.operation.path} -> {response.status_code}")
            try:
                case.validate_response(
                    response, checks=checks, transport_kwargs=kwargs, recorder=self.recorder
                )
            except (FailureGroup, AssertionError) as failure:
                failures.append(f"{steps[-1]}: {failure}")

    # Fixed seeds, so the same scenarios every run; a run that Hypothesis cuts short (see
    # above) is followed by the next seed until enough steps were checked, at most five.
    for scenario_seed in range(20260109, 20260114):
        hypothesis.seed(scenario_seed)(Workflow)
        with contextlib.suppress(hypothesis.errors.FlakyStrategyDefinition):
            Workflow.run(
                settings=hypothesis.settings(
                    max_examples=STATEFUL_SCENARIOS,
                    stateful_step_count=STEPS_PER_SCENARIO,
                    phases=[hypothesis.Phase.generate],
                    database=None,
                    deadline=None,
                    print_blob=False,
                    suppress_health_check=list(HealthCheck),
                )
            )
        if len(steps) >= MIN_STATEFUL_STEPS:
            break
    assert failures == []
    linked = [step for step in steps if "{" in step.split(" ")[1]]
    assert len(steps) >= MIN_STATEFUL_STEPS, steps
    assert linked, steps
