"""Retrying Redis calls through outages: exponential back-off with jitter, never a crash."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.OutOfMemoryError,
)
"""Errors that mean "the server is (re)starting, unreachable, failing over or full", not "the request
is wrong" (the classes the API answers 503 for, too)."""

MISCONF = "MISCONF"
"""Error prefix of a server that refuses writes because its persistence failed (an RDB save or AOF
write failed, e.g. a full disk). redis-py has no class for it: it is a plain ``ResponseError``."""


def transient(exc: BaseException) -> bool:
    """Whether a later retry of the same call may succeed: an outage, or a refusal that ends by itself.

    Why MISCONF counts: the server refuses every write until a save succeeds again, then resumes on
    its own. Treated as a bug, it ended the job loop: a worker whose model had just returned lost the
    result (the job ran again after the visibility timeout) and every worker of the pool exited and
    was restarted, paying its warm-up again, for a condition that needed none of that.
    """
    if isinstance(exc, RETRYABLE):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(MISCONF)


class GaveUp(Exception):  # noqa: N818 - a control-flow signal, not an error condition
    """``give_up()`` became true while Redis was unreachable."""


def with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    wake: threading.Event | None = None,
    give_up: Callable[[], bool] = lambda: False,
    on_error: Callable[[], None] = lambda: None,
    first: float = 0.05,
    cap: float = 2.0,
) -> T:
    """Call ``fn`` until it succeeds, or until ``give_up()`` is true after a :func:`transient` failure
    (then :class:`GaveUp`); any other error is raised at once. Back-off sleeps end early when ``wake``
    is set (a drain request), so ``give_up`` is re-checked promptly; without ``wake`` they run to term."""
    delay = first
    failures = 0
    while True:
        try:
            result = fn()
        except redis.RedisError as exc:
            if not transient(exc):
                raise
            failures += 1
            on_error()
            if failures == 1 or failures % 20 == 0:
                log.warning("redis unavailable during %s (%s: %s); retrying", what, type(exc).__name__, exc)
            if give_up():
                raise GaveUp(what) from exc
            pause = delay * random.uniform(0.5, 1.0)
            if wake is None or wake.is_set():
                time.sleep(pause)
            else:
                wake.wait(pause)
            delay = min(cap, delay * 2)
            continue
        if failures:
            log.info("redis back after %d failed attempts of %s", failures, what)
        return result
