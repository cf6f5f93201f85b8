"""Read back the timestamps of stored job records: what a queue was asked to do, and when.

The job streams cannot answer "which jobs arrived": workers acknowledge *and delete* entries, and
the completions stream is capped (``Settings.completions_maxlen``) and only knows finished attempts.
The job records can: every accepted submission writes one hash with ``submitted_at``, and it stays
until ``Settings.result_ttl`` after the job finished. So the arrivals of the last ``result_ttl``
seconds (24 h by default) are exactly the records a ``SCAN`` finds, queued and running jobs included.

Only the timestamp fields are read (``HMGET``), never inputs or outputs, so a scan over large
payloads costs what the timestamps cost. ``SCAN`` is incremental and does not block the server;
it may return a key twice, which is deduplicated here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jobqueue import codec
from jobqueue.driver import Op, call
from jobqueue.keys import Keyspace
from jobqueue.ops import DEFAULT_SETTINGS
from jobqueue.types import JobStatus, Settings

log = logging.getLogger(__name__)

_FIELDS = ("id", "queue", "status", "submitted_at", "started_at", "finished_at", "attempts")


@dataclass(frozen=True, slots=True)
class JobTimes:
    """When one job was submitted, last started and finished (epoch seconds, server-side record)."""

    id: str
    queue: str
    status: JobStatus
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int

    @property
    def service_seconds(self) -> float | None:
        """Duration of the attempt that finished the job; None unless it ran to an outcome."""
        if self.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return None
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def latency_seconds(self) -> float | None:
        """Submission to the end of its last attempt, for jobs that ran to an outcome."""
        if self.service_seconds is None or self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at


class _CorruptRecordError(ValueError):
    """A job record whose timestamps, status or attempts do not parse."""


def _parse(values: list[str | None]) -> JobTimes | None:
    """A record's fields, or None when it expired between SCAN and HMGET or is not a job record.

    Raises :class:`_CorruptRecordError` for a record that is a job's but does not parse: the worker fails
    such a job as malformed and keeps its record for ``result_ttl``, so a scan meets it for a day.
    """
    fields = dict(zip(_FIELDS, values, strict=True))
    job_id, queue, status, submitted = (fields[k] for k in ("id", "queue", "status", "submitted_at"))
    if not (job_id and queue and status and submitted):
        return None
    try:
        return JobTimes(
            id=job_id,
            queue=queue,
            status=JobStatus(status),
            submitted_at=float(submitted),
            started_at=codec.opt_float(fields["started_at"]),
            finished_at=codec.opt_float(fields["finished_at"]),
            attempts=int(fields["attempts"] or 0),
        )
    except ValueError as exc:
        raise _CorruptRecordError(f"job {job_id}: {exc}") from exc


def scan_job_times(
    queue: str | None = None,
    *,
    since: float | None = None,
    batch: int = 1000,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[list[JobTimes]]:
    """Every stored job record (of ``queue``, submitted at or after ``since``), oldest first.

    One ``SCAN`` round trip per ``batch`` keys, then one pipelined ``HMGET`` per key found. Jobs that
    finished more than ``settings.result_ttl`` ago have expired and are not returned, and neither
    are records whose fields do not parse: they are logged as a warning with their count. One such
    record made the whole scan raise, and with it every recording of the queue for a day.
    """
    pattern = Keyspace(settings.prefix).job("*")  # the job key layout, with a glob for the id
    found: dict[str, JobTimes] = {}
    corrupt: list[str] = []
    cursor = "0"
    while True:
        ((cursor, keys),) = yield [call("SCAN", cursor, "MATCH", pattern, "COUNT", batch)]
        if keys:
            rows = yield [call("HMGET", key, *_FIELDS) for key in keys]
            for row in rows:
                try:
                    times = _parse(row)
                except _CorruptRecordError as exc:
                    corrupt.append(str(exc))
                    continue
                if times is None or (queue is not None and times.queue != queue):
                    continue
                if since is None or times.submitted_at >= since:
                    found[times.id] = times
        if str(cursor) == "0":
            if corrupt:
                log.warning("skipped %d job record(s) that do not parse, e.g. %s", len(corrupt), corrupt[0])
            return sorted(found.values(), key=lambda t: (t.submitted_at, t.id))
