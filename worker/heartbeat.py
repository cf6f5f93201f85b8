"""Background heartbeat: publishes the worker's registry entry and renews its job's lease.

A thread rather than a step of the job loop because the loop is blocked inside ``predict`` for
seconds at a time; the lease must keep being renewed meanwhile or the job would be reclaimed
by another worker after the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from jobqueue import Entry, MalformedJobError, Settings
from jobqueue import sync as jq
from jobqueue.errors import describe, misconfigured, remedy
from worker.metrics import WorkerMetrics
from worker.retry import transient
from worker.status import LiveStatus

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        status: LiveStatus,
        metrics: WorkerMetrics,
        interval: float,
        settings: Settings,
        *,
        on_redis_error: Callable[[], None] | None = None,
        on_redis_reached: Callable[[], None] | None = None,
    ) -> None:
        """``on_redis_error`` is called after a beat Redis did not serve (a transient error: down,
        unreachable, refusing for a while), ``on_redis_reached`` after one it did: the worker
        learns from both whether an outage may have kept leases from being renewed (see
        :mod:`worker.contact`)."""
        super().__init__(name="heartbeat", daemon=True)
        self._on_redis_error = on_redis_error
        self._on_redis_reached = on_redis_reached
        self.client = client
        self.status = status
        self.metrics = metrics
        self.interval = interval
        self.settings = settings
        self._stop_event = threading.Event()
        self._warned_lost: str | None = None
        self._down = False
        # Held by every beat's write and by the deregistration in retire(); see there.
        self._lock = threading.Lock()
        self._retired = False

    def beat(self) -> None:
        """One heartbeat; Redis being down is logged once per outage and otherwise ignored. Writes
        nothing once :meth:`retire` has run, from whichever thread it is called."""
        with self._lock:
            if not self._retired:
                self._beat()

    def _beat(self) -> None:
        info, lease = self.status.snapshot()
        try:
            held = jq.heartbeat(self.client, info, lease=lease, settings=self.settings)
        except redis.RedisError as exc:
            self.status.redis_failed(exc)
            if not transient(exc):
                raise
            self.metrics.redis_errors.labels(self.metrics.queue).inc()
            if self._on_redis_error is not None:
                self._on_redis_error()
            if not self._down:
                log.warning("heartbeat failed (%s); will keep trying", exc)
            self._down = True
            return
        self._down = False
        self.status.redis_reached()
        if self._on_redis_reached is not None:
            self._on_redis_reached()
        if held is False and lease is not None and self._warned_lost != lease.entry_id:
            self._warned_lost = lease.entry_id
            log.warning("job %s %s; this attempt's result will be discarded", lease.job_id, self._lost(lease))

    def _lost(self, lease: Entry) -> str:
        """Why the running job's entry is no longer pending under this worker, from the job's record
        (looked up once per lost lease): another worker reclaimed it, or the record is gone with it,
        Redis having lost its data (a restart without persistence). Reported as a reclaim, that sent
        an operator looking for a second worker that never existed."""
        try:
            job = jq.get_job(self.client, lease.job_id, settings=self.settings)
        except (redis.RedisError, MalformedJobError):  # the record cannot tell: say the usual cause
            return "was reclaimed by another worker"
        if job is None:
            return (
                "is gone from Redis (its record and its entry: Redis lost its data, e.g. restarted "
                "without persistence, or they were deleted)"
            )
        if job.worker and job.worker != self.status.name:
            return f"was reclaimed by worker {job.worker}"
        return "was reclaimed by another worker"

    def run(self) -> None:
        failing: str | None = None
        while not self._stop_event.is_set():
            # The lease of a running job lives on this thread. Any other refusal (MISCONF while the
            # server cannot persist, say) must not end it: the job would then be reclaimed and run
            # twice once the condition cleared, and the autoscaler would lose sight of this pod.
            # Counted as an error, not reported as an outage: an error reply (WRONGTYPE, NOPERM) is
            # Redis answering, and a failure that is not Redis's says nothing about it either; as
            # an outage, it postponed the worker's reclaim for as long as it recurred.
            try:
                self.beat()
                failing = None
            except Exception as exc:
                self.metrics.redis_errors.labels(self.metrics.queue).inc()
                if failing != str(exc) and misconfigured(exc):  # no traceback: nothing to debug
                    log.error("heartbeat failed: redis %s; %s", describe(exc), remedy(exc))
                elif failing != str(exc):  # once per distinct error, not every interval
                    log.exception("heartbeat failed; will keep trying")
                failing = str(exc)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def retire(self, deregister: Callable[[], None]) -> None:
        """Stop for good and run ``deregister`` as the last registry write this worker makes.

        Why not :meth:`stop` then deregister: its join gives up after 5 s, and a beat can be in
        flight longer (a slow server, a reconnect, redis-py retrying the pipeline). Its HSET and
        ZADD then landed after the deregistration's DEL and ZREM and put the entry back, as
        ``draining``, for WORKER_TTL: a ghost the autoscaler counts. Here ``deregister`` runs under
        the lock every beat writes under, once no beat may write again: a beat in flight is
        waited for (its Redis calls end within the client's socket timeouts) and any later one,
        of this thread or another, writes nothing.
        """
        self._stop_event.set()
        with self._lock:
            self._retired = True
            deregister()
        if self.is_alive():
            self.join(timeout=5)
