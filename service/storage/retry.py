"""The one retry policy for database calls: which errors, how often, how long.

Only transient failures are retried (the network, a primary stepping down, a server
shutting down); a duplicate, a validation error or any other server error is final.
Waits are full-jitter exponential (`backoff.expo` + `backoff.full_jitter`), and every
wait is cut to what is left of the request's deadline, so retries can never make a
client wait longer than `request.deadline_seconds`. A transient failure that outlives its
retries becomes `Unavailable` (503 + Retry-After), never a 500.

Each attempt runs under its own budget, PyMongo's client-side operation timeout
(`pymongo.timeout`, honoured by both drivers; Motor carries it into its threads): the
socket wait and the `maxTimeMS` sent to the server are both cut to it, so an abandoned
attempt stops on both ends instead of running on for a whole socket timeout. The budget
is the time left shared among the attempts left, so a stalled server still leaves room
for a retry within the deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

import backoff
import pymongo
from aiohttp import web

from service.domain.errors import Unavailable
from service.settings.model import MongoSettings, RetrySettings
from service.storage.mongo import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Server codes that mean "this node cannot serve right now", not "this request is wrong".
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")

# The loop-clock time by which the current request must be answered (None outside requests).
# The middleware that sets it is a request concern (service/http/middlewares.py); it lives
# here, with its reader, so that storage never imports http.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "deadline", default=None
)


def is_transient(error: BaseException) -> bool:
    """Whether trying the same operation again could succeed."""
    if isinstance(error, DuplicateKeyError):
        return False
    if isinstance(error, ServerSelectionTimeoutError):
        # The driver already waited server_selection_timeout_ms for a server: waiting
        # again inside the same request would only spend the client's deadline.
        return False
    if isinstance(error, ConnectionFailure):  # AutoReconnect, NotPrimaryError, NetworkTimeout
        return True
    if isinstance(error, PyMongoError) and error.timeout:
        # An attempt that used up its budget (socket wait or the server's maxTimeMS): the
        # next attempt, with its own share of the deadline, may find the server free.
        return True
    if isinstance(error, PyMongoError) and any(
        error.has_error_label(label) for label in TRANSIENT_LABELS
    ):
        return True
    return isinstance(error, OperationFailure) and error.code in TRANSIENT_CODES


def _is_permanent(error: Exception) -> bool:
    return not is_transient(error)


def is_unavailable(error: BaseException) -> bool:
    """Failures that say the database cannot be reached (as opposed to a bad request)."""
    return is_transient(error) or isinstance(error, ServerSelectionTimeoutError)


OnRetry = Callable[[str, str], None]


@dataclass(slots=True)
class Tries:
    """One call's tries so far, and a failure backoff has yet to be shown."""

    count: int = 0
    failure: PyMongoError | None = None


@dataclass
class RetryPolicy:
    """Settings plus the counters the metrics read: retries by (operation, error class)."""

    settings: RetrySettings
    # The attempt budget never exceeds the socket timeout (outside requests, it is it).
    socket_timeout_seconds: float
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    hooks: list[OnRetry] = field(default_factory=list)
    # backoff's retrying wrapper per operation, built on first use: building one per call
    # cost more CPU than a database miss's own Python work (README, Performance). Every
    # setting it reads is a callable, read at each call.
    _retriers: dict[str, Callable[..., Awaitable[Any]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def retrier(self, operation: str) -> Callable[..., Awaitable[Any]]:
        """`operation`'s retrying call, once a first try has failed:
        `await retrier(Tries(1, failure), function, *args, **kwargs)`."""
        retrier = self._retriers.get(operation)
        if retrier is None:
            retrier = self._retriers[operation] = backoff.on_exception(
                backoff.expo,
                PyMongoError,
                max_tries=lambda: self.settings.max_tries,
                # None (outside a request) means no limit; backoff's hint says float only.
                max_time=cast(Callable[[], float], self.remaining),
                giveup=_is_permanent,
                jitter=backoff.full_jitter,
                base=2,
                factor=lambda: self.settings.base_ms / 1000,
                max_value=lambda: self.settings.cap_ms / 1000,
                on_backoff=lambda details: self.record(operation, dict(details)),
                raise_on_giveup=True,
                logger=None,
            )(self._again)
        return retrier

    async def _again(
        self, tries: Tries, function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """backoff's target: first the failure of the try made before backoff was called
        (so that backoff counts it and waits), then a new try on each call."""
        if (failure := tries.failure) is not None:
            tries.failure = None
            raise failure
        return await self.attempt(tries, function, *args, **kwargs)

    async def attempt(
        self, tries: Tries, function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """One try of `function` under its share of the time left."""
        tries.count += 1
        budget = self.attempt_budget(tries.count)
        if budget < MIN_ATTEMPT_SECONDS:
            raise Unavailable("The request ran out of time before reaching the database.")
        with pymongo.timeout(budget):
            return await function(*args, **kwargs)

    def remaining(self) -> float | None:
        deadline = deadline_var.get()
        return None if deadline is None else deadline - asyncio.get_running_loop().time()

    def attempt_budget(self, attempt: int) -> float:
        """Seconds attempt number `attempt` (from 1) may take: the time left, less a reserve
        for answering, shared equally among the attempts left, at most the socket timeout.
        Zero or less means no attempt fits."""
        remaining = self.remaining()
        if remaining is None:
            return self.socket_timeout_seconds
        attempts_left = max(1, self.settings.max_tries - attempt + 1)
        share = (remaining - ANSWER_RESERVE_SECONDS) / attempts_left
        return min(self.socket_timeout_seconds, share)

    def record(self, operation: str, details: dict[str, Any]) -> None:
        error = details.get("exception")
        error_class = type(error).__name__
        self.counts[(operation, error_class)] += 1
        for hook in self.hooks:
            hook(operation, error_class)
        log.warning(
            "retrying %s after %s (attempt %d, waiting %.0f ms)",
            operation,
            error_class,
            details["tries"],
            details["wait"] * 1000,
            extra={"operation": operation, "attempt": details["tries"], "error_class": error_class},
        )


RETRY_POLICY = web.AppKey("retry_policy", RetryPolicy)
# Kept back from the last attempt so that its own timeout ends it a little before the
# deadline: the request then answers 503 in time, with no driver work left behind.
ANSWER_RESERVE_SECONDS = 0.03
# Below this an attempt cannot even reach the server: answer 503 instead of sending it.
MIN_ATTEMPT_SECONDS = 0.005


def retry_policy(retry: RetrySettings, mongo: MongoSettings) -> RetryPolicy:
    return RetryPolicy(retry, socket_timeout_seconds=mongo.socket_timeout_ms / 1000)


class UnderPolicy(Protocol):
    """What `retried` methods belong to: query classes, each holding its retry policy."""

    @property
    def policy(self) -> RetryPolicy: ...


Q = TypeVar("Q", bound=UnderPolicy)
QueryMethod = Callable[Concatenate[Q, P], Awaitable[R]]


def retried(operation: str) -> Callable[[QueryMethod[Q, P, R]], QueryMethod[Q, P, R]]:
    """Retry a query method under the policy of the query class it belongs to.

    The decorator is applied once, at class creation, and reads the settings per call.
    """

    def decorate(function: QueryMethod[Q, P, R]) -> QueryMethod[Q, P, R]:
        @functools.wraps(function)
        async def wrapper(queries: Q, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return await call_with_retries(
                queries.policy, operation, function, queries, *args, **kwargs
            )

        return wrapper

    return decorate


async def call_with_retries[**P, R](
    policy: RetryPolicy,
    operation: str,
    function: Callable[P, Awaitable[R]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    remaining = policy.remaining()
    if remaining is not None and remaining <= 0:
        raise Unavailable("The request ran out of time before reaching the database.")
    tries = Tries()
    try:
        try:
            # The first try goes without backoff's wrapper, whose set-up per call (a wait
            # generator, a clock read, its details) cost more than the try's own Python
            # work; most calls need no second try (README, Performance).
            return cast(R, await policy.attempt(tries, function, *args, **kwargs))
        except PyMongoError as error:
            if _is_permanent(error):
                raise
            tries.failure = error
        return cast(R, await policy.retrier(operation)(tries, function, *args, **kwargs))
    except PyMongoError as error:
        if is_unavailable(error):
            raise Unavailable("The database is unavailable; retry shortly.") from error
        raise
