"""Retrying Redis calls through outages: exponential back-off with jitter, never a crash."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from jobqueue.backoff import backoff_delay
from jobqueue.errors import transient

T = TypeVar("T")
__all__ = ["GaveUp", "transient", "with_retry"]
log = logging.getLogger(__name__)
_rng = random.Random()


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
            pause = backoff_delay(failures - 1, first, cap, _rng)
            if wake is None or wake.is_set():
                time.sleep(pause)
            else:
                wake.wait(pause)
            continue
        if failures:
            log.info("redis back after %d failed attempts of %s", failures, what)
        return result
