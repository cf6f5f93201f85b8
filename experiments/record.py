"""Turn the job records a live system kept into a replayable trace (``python -m experiments record``).

What is exported, precisely:

* one row per job record of the queue still stored in Redis and submitted at or after ``since``:
  its ``timestamp`` is the server-side ``submitted_at``, in seconds after the first exported one.
  Records expire ``RESULT_TTL`` (24 h by default) after their job finished, so older arrivals are
  missing; queued, running, cancelled and dead-lettered jobs are included (the API accepted them);
  an idempotent re-submission that matched an earlier job is one arrival, as it was one job;
* ``service_s`` is ``finished_at - started_at`` of the attempt that finished the job (a retried
  job's earlier attempts are not counted). It is written only when every exported job has one: a
  generic trace needs a value on every row, and inventing one would bias a replay. Jobs still
  queued or running, cancelled or dead-lettered have none; re-record once they have finished.

``speedup`` scales times back for a time-compressed run (the demo runs the workload ``speedup``
times faster than real): timestamps and service times are multiplied by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the queue client (and redis-py) loads only when `record` runs
    from jobqueue.records import JobTimes


@dataclass(frozen=True, slots=True)
class Recording:
    """A recorded trace: arrivals (s after ``origin``), service times when every job had one."""

    queue: str
    origin: float  # epoch seconds of the first exported arrival
    arrivals: np.ndarray
    service: np.ndarray | None
    without_service: int  # jobs that did not (yet) run to an outcome

    def __len__(self) -> int:
        return len(self.arrivals)

    def describe(self) -> str:
        """What was exported and what was left out, in one line for stderr."""
        if not len(self):
            return f"queue {self.queue}: no stored job records match"
        span = float(self.arrivals[-1])
        text = f"queue {self.queue}: {len(self)} arrivals over {span:.1f} s"
        if self.service is not None:
            return text + ", with service_s"
        return text + f"; service_s omitted: {self.without_service} job(s) have not run to an outcome"


def recording(jobs: Sequence[JobTimes], queue: str, speedup: float = 1.0) -> Recording:
    """The trace of ``jobs`` (as :func:`jobqueue.records.scan_job_times` returns them)."""
    if speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    ordered = sorted(jobs, key=lambda j: j.submitted_at)
    if not ordered:
        return Recording(queue, 0.0, np.zeros(0), None, 0)
    origin = ordered[0].submitted_at
    arrivals = (np.array([j.submitted_at for j in ordered]) - origin) * speedup
    services = [j.service_seconds for j in ordered]
    missing = sum(1 for s in services if s is None)
    service = None if missing else np.array(services, dtype=np.float64) * speedup
    return Recording(queue, origin, arrivals, service, missing)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration ago (``90s``, ``15m``, ``2h``, ``1d``), epoch seconds, or ISO 8601.

    An ISO time without a zone is read as UTC, the zone job records are written in.
    """
    raw = text.strip()
    if raw[-1:] in _UNITS:
        try:
            return now - float(raw[:-1]) * _UNITS[raw[-1]]
        except ValueError:
            pass
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration ago (90s, 15m, 2h, 1d), epoch seconds or an ISO time"
        ) from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
