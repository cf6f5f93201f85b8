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

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
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


FORGET_AFTER = 600.0
"""Seconds without an accepted job after which a queue the router no longer routes to (a version
rolled out of the split) stops being read and exported."""


class BacklogMonitor:
    """The backlog of each queue this process submits to: read by :meth:`refresh`, exported as
    ``api_queue_waiting_jobs{queue}``, checked by :meth:`check`.

    ``live`` names the queues the router may send a job to now (its known versions). A queue not
    among them that accepted no job for :data:`FORGET_AFTER` seconds is forgotten, its gauge series
    removed: every version a process ever served was read on every refresh and exported for the
    process's life. It comes back with its next accepted job (a retry of a key it holds queues
    nothing)."""

    def __init__(
        self,
        max_waiting: int,
        settings: Settings,
        metrics: ApiMetrics,
        live: Callable[[], Collection[str]] = frozenset,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_waiting = max_waiting
        self.settings = settings
        self.metrics = metrics
        self.live = live
        self.clock = clock
        self.waiting: dict[str, int] = {}
        self._accepted_since_read: dict[str, int] = {}
        self._last_accepted: dict[str, float] = {}

    def watch(self, queue: str) -> None:
        self.waiting.setdefault(queue, 0)
        self._last_accepted.setdefault(queue, self.clock())

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
        self.waiting.setdefault(queue, 0)
        self._last_accepted[queue] = self.clock()

    def forget_retired(self) -> None:
        """Stop reading and exporting the queues no longer routed to and idle (see the class)."""
        live, idle_since = self.live(), self.clock() - FORGET_AFTER
        for queue in [q for q in self.waiting if q not in live and self._last_accepted[q] < idle_since]:
            del self.waiting[queue], self._last_accepted[queue]
            self._accepted_since_read.pop(queue, None)
            with contextlib.suppress(KeyError):  # never read yet: no series
                self.metrics.waiting.remove(queue)

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        self.forget_retired()
        queues = sorted(self.waiting)
        # Submissions that land while the read is in flight may or may not be in it; counting them
        # again until the next read errs on the safe (refusing) side.
        accepted_before = dict(self._accepted_since_read)
        backlog = await _read_backlog(client, queues, settings=self.settings)
        for queue, b in backlog.items():
            if queue not in self.waiting:  # forgotten while the read was in flight
                continue
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
