"""The per-job time limit (JOB_TIMEOUT): a thread that gives up a model call that does not return.

Why a watchdog that ends the process: the heartbeat renews the running job's lease as long as the
process lives, so a ``predict`` that hangs (a deadlocked kernel, a stuck download) would hold its
job forever: never finished, never retried, and the worker lost to the pool while it still looks
busy and healthy. Python cannot interrupt a thread stuck in native code, and a model that hung once
cannot be trusted with the next job, so when the limit passes the attempt is recorded as a
retryable error (the job is retried elsewhere, or dead-lettered at MAX_ATTEMPTS with the timeout
as its error) and the process exits with :data:`EXIT_JOB_TIMEOUT`; Kubernetes restarts the
container. The recording itself is the worker's (:meth:`worker.runner.Worker` passes it in).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from jobqueue import Entry
from worker.status import LiveStatus

EXIT_JOB_TIMEOUT = 124
"""Exit status after a job timed out (the one ``timeout(1)`` uses), distinct from crashes."""


class JobWatchdog(threading.Thread):
    """Checks the running job's model call a few times per limit (at least once a second) and calls
    ``on_overdue(entry, seconds)`` once, from this thread, when it has run ``limit`` seconds."""

    def __init__(self, status: LiveStatus, limit: float, on_overdue: Callable[[Entry, float], None]) -> None:
        super().__init__(name="job-watchdog", daemon=True)
        self.status = status
        self.limit = limit
        self.on_overdue = on_overdue
        self.interval = min(1.0, limit / 10)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            overdue = self.status.overdue(self.limit)
            if overdue is not None:
                self.on_overdue(*overdue)
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
