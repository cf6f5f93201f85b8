"""Admission control: refuse work early and cheaply, with a Retry-After, instead of degrading.

Circuit breaker on queue depth: refuse submissions (429) while a queue's backlog is at
``MAX_WAITING``, so a burst the workers cannot absorb is pushed back to clients (who retry later)
instead of growing a queue whose tail would wait longer than anyone cares to.

The backlog is read in the background for every queue this process has submitted to (one
pipelined round trip per refresh for all of them), and the submissions this process accepted since
the last read are added on top: the check itself is a dictionary lookup, and a burst between two
reads cannot overshoot the limit by more than what other replicas accepted in that interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio

from api.errors import ApiError
from api.metrics import ApiMetrics
from jobqueue import Settings
from jobqueue.backlog import read_backlog
from jobqueue.binding import bind_async

_read_backlog = bind_async(read_backlog)

OVERLOAD_RETRY_AFTER = 5.0
"""Seconds a refused client is asked to wait: long enough for workers to drain some backlog."""


class BacklogMonitor:
    def __init__(self, max_waiting: int, settings: Settings, metrics: ApiMetrics) -> None:
        self.max_waiting = max_waiting
        self.settings = settings
        self.metrics = metrics
        self.waiting: dict[str, int] = {}
        self._accepted_since_read: dict[str, int] = {}

    def watch(self, queue: str) -> None:
        self.waiting.setdefault(queue, 0)

    def estimate(self, queue: str) -> int:
        return self.waiting.get(queue, 0) + self._accepted_since_read.get(queue, 0)

    def full(self, queue: str) -> bool:
        """Whether one more job would put ``queue`` above ``max_waiting`` (what :meth:`check` refuses)."""
        return bool(self.max_waiting) and self.estimate(queue) >= self.max_waiting

    def check(self, queue: str) -> None:
        """Raise 429 if accepting one more job would put ``queue`` above ``max_waiting``."""
        if self.full(queue):
            raise ApiError(
                429,
                "overloaded",
                f"queue {queue} has {self.estimate(queue)} waiting jobs (limit {self.max_waiting}); "
                "retry later",
                retry_after=OVERLOAD_RETRY_AFTER,
                reason="overloaded",
            )

    def accepted(self, queue: str) -> None:
        self._accepted_since_read[queue] = self._accepted_since_read.get(queue, 0) + 1
        self.watch(queue)

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        queues = sorted(self.waiting)
        # Submissions that land while the read is in flight may or may not be in it; counting them
        # again until the next read errs on the safe (refusing) side.
        accepted_before = dict(self._accepted_since_read)
        backlog = await _read_backlog(client, queues, settings=self.settings)
        for queue, b in backlog.items():
            self.waiting[queue] = b.waiting
            self.metrics.waiting.labels(queue).set(b.waiting)
        for queue, n in accepted_before.items():
            left = self._accepted_since_read.get(queue, 0) - n
            if left > 0:
                self._accepted_since_read[queue] = left
            else:
                self._accepted_since_read.pop(queue, None)


class ConcurrencyGate:
    """Counts in-flight sync requests of this process; refuses beyond ``limit`` (no queueing)."""

    def __init__(self, limit: int, metrics: ApiMetrics) -> None:
        self.limit = limit
        self.in_flight = 0
        self.metrics = metrics

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise ApiError(
                429, "too_many_requests",
                f"{self.limit} synchronous requests already in flight on this instance; retry, or use "
                "POST /v1/jobs and poll", retry_after=1, reason="concurrency",
            )  # fmt: skip
        self.in_flight += 1
        self.metrics.inflight_sync.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.inflight_sync.set(self.in_flight)
