"""Retrying failed model calls: exponential backoff with jitter, per-call counts, and when to give up.

Transport-neutral: a backend raises ``TransientFailure`` for a failure worth retrying (a timeout, a lost
connection, a rate limit, a server error) and runs its request through ``call_with_retries``. When the
retries are spent it raises ``CallFailed``, which the engine treats as one failed item or one failed
mutation, not as the end of the breed. ``ServerUnavailable`` ends the breed (resumably) when calls keep
failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from typing import Awaitable, Callable, TypeVar

import attrs

from lpb_core.errors import ModelError

T = TypeVar("T")

# This many calls failing in a row (each after its retries) means the server is down, not unlucky.
CONSECUTIVE_FAILURES_TO_STOP = 8


class TransientFailure(Exception):
    """A request failed in a way that may pass if it is sent again (``retry_after``: seconds the server asked for)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CallFailed(ModelError):
    """A model call still failed after its retries; the breed counts it and goes on."""


class ServerUnavailable(ModelError):
    """Calls keep failing after their retries: the breed stops, resumably."""


@attrs.frozen
class RetryPolicy:
    max_retries: int = 5
    timeout: float | None = 120.0  # seconds one request may take before it counts as failed (None: no limit)
    base_delay: float = 0.5  # seconds before the first retry; doubled for each further one
    max_delay: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> "RetryPolicy":
        """The policy of ``lpb breed --max-retries --request-timeout``."""
        return cls(max_retries=settings.max_retries, timeout=settings.request_timeout)

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): full jitter over the backoff, and never less
        than what the server asked for (Retry-After), which may exceed ``max_delay``."""
        backoff = rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** retry))
        return max(backoff, retry_after or 0.0)


@attrs.define
class CallRecord:
    """What happened to one model call's requests."""

    retries: int = 0


_current_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("lpb_current_call", default=None)


@contextlib.contextmanager
def recording():
    """Count the retries of the requests made inside (tasks started inside inherit the record)."""
    record = CallRecord()
    token = _current_call.set(record)
    try:
        yield record
    finally:
        _current_call.reset(token)


_jitter = random.Random()  # backoff jitter spreads clients apart; it never changes a result, so it is not seeded


async def call_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str,
                            sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """``await attempt()``, again after each TransientFailure or timeout, at most ``policy.max_retries`` times."""
    for retry in range(policy.max_retries + 1):
        try:
            return await (attempt() if policy.timeout is None else asyncio.wait_for(attempt(), policy.timeout))
        except TransientFailure as exc:
            failure, retry_after = str(exc), exc.retry_after
        except asyncio.TimeoutError:
            failure, retry_after = f"no answer within {policy.timeout:g}s", None
        if retry == policy.max_retries:
            break
        record = _current_call.get()
        if record is not None:
            record.retries += 1
        await sleep(policy.delay(retry, retry_after, _jitter))
    retries = f" (after {policy.max_retries} retr{'y' if policy.max_retries == 1 else 'ies'})" \
        if policy.max_retries else ""
    raise CallFailed(f"{what}: {failure}{retries}")
