"""The worker's live state, shared by the job loop (its only writer), the heartbeat and the probes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from jobqueue import Entry, WorkerInfo, WorkerState


def process_start_time() -> float:
    """Epoch time this process was created (from /proc), so the measured warm-up includes the
    interpreter start and imports, as the pod's creation-to-Ready time does; now() off Linux."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")  # seconds since this process started
        return time.time() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return time.time()


class LiveStatus:
    def __init__(self, name: str, queue: str, started_at: float | None = None) -> None:
        self.name = name
        self.queue = queue
        self.started_at = process_start_time() if started_at is None else started_at
        self._lock = threading.Lock()
        self._state = WorkerState.STARTING
        self._entry: Entry | None = None
        self._ready_at: float | None = None
        # The running job's model call: when it began (monotonic; None when no call is running)
        # and whether the watchdog gave the attempt up (see overdue).
        self._called_at: float | None = None
        self._abandoned = False
        # Set by drain() without the lock: drain runs in the SIGTERM handler, on the main thread,
        # which may be holding the lock in the middle of busy()/idle() when the signal lands.
        # Taking it there again (it is not re-entrant) hung the worker until SIGKILL. The reads
        # below report it over whatever _state the interrupted update leaves behind.
        self._drain_requested = False
        # While the heartbeat fails to reach Redis: since when (monotonic) and its last error.
        self._redis_down: tuple[float, str] | None = None

    def redis_reached(self) -> None:
        """The heartbeat's round trip to Redis succeeded."""
        with self._lock:
            self._redis_down = None

    def redis_failed(self, error: BaseException) -> None:
        """The heartbeat's round trip to Redis failed; the outage counts from its first failure."""
        with self._lock:
            since = time.monotonic() if self._redis_down is None else self._redis_down[0]
            self._redis_down = (since, f"{type(error).__name__}: {error}")

    @property
    def redis_outage(self) -> tuple[float, str] | None:
        """Seconds the heartbeat has been failing to reach Redis and its last error; None while it
        reaches it. Reported by /healthz and ``worker_redis_up``, not by readiness: see
        :mod:`worker.probes`."""
        with self._lock:
            if self._redis_down is None:
                return None
            since, error = self._redis_down
            return time.monotonic() - since, error

    def mark_ready(self) -> float:
        """Setup is done; returns the measured warm-up in seconds."""
        with self._lock:
            self._ready_at = time.time()
            if self._state is WorkerState.STARTING:
                self._state = WorkerState.IDLE
            return self._ready_at - self.started_at

    def busy(self, entry: Entry) -> None:
        """The job loop starts running ``entry``'s job: its lease is renewed and its clock runs."""
        with self._lock:
            self._entry = entry
            self._called_at = time.monotonic()
            if self._state is not WorkerState.DRAINING:
                self._state = WorkerState.BUSY

    def returned(self) -> bool:
        """The model call returned: stop the job's clock. False if :meth:`overdue` gave the attempt
        up first; its result must then not be recorded (the timeout was, and the process is exiting).
        One lock decides between the two, so exactly one of them records the attempt."""
        with self._lock:
            if self._abandoned:
                return False
            self._called_at = None
            return True

    def overdue(self, limit: float) -> tuple[Entry, float] | None:
        """If the running model call has lasted ``limit`` seconds, give its attempt up and return the
        entry and the seconds it ran; else None. A given-up attempt's lease is no longer renewed
        (so if the timeout cannot be recorded, another worker reclaims the entry) and the worker
        reports ``draining`` (not ready): it is about to exit."""
        with self._lock:
            if self._entry is None or self._called_at is None or self._abandoned:
                return None
            elapsed = time.monotonic() - self._called_at
            if elapsed < limit:
                return None
            self._abandoned = True
            self._state = WorkerState.DRAINING
            return self._entry, elapsed

    def idle(self) -> None:
        with self._lock:
            self._entry = None
            self._called_at = None
            if self._state is WorkerState.BUSY:
                self._state = WorkerState.IDLE

    def drain(self) -> None:
        """Take no new job from now on. Safe in a signal handler: a plain attribute write, no lock."""
        self._drain_requested = True

    def _current(self) -> WorkerState:
        return WorkerState.DRAINING if self._drain_requested else self._state

    @property
    def state(self) -> WorkerState:
        with self._lock:
            return self._current()

    @property
    def ready(self) -> bool:
        """Serving jobs: set up and not draining (the readiness probe's answer)."""
        with self._lock:
            return self._ready_at is not None and self._current() is not WorkerState.DRAINING

    def snapshot(self) -> tuple[WorkerInfo, Entry | None]:
        """The registry entry to publish now, and the entry whose lease must be renewed (none once
        the attempt was given up as timed out)."""
        with self._lock:
            info = WorkerInfo(
                name=self.name,
                queue=self.queue,
                state=self._current(),
                started_at=self.started_at,
                heartbeat_at=time.time(),
                job=self._entry.job_id if self._entry else None,
                ready_at=self._ready_at,
                warmup_seconds=None if self._ready_at is None else self._ready_at - self.started_at,
                pid=os.getpid(),
            )
            return info, None if self._abandoned else self._entry
