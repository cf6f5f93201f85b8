"""Value types of the job protocol: what a job, a worker and a queue look like to Python code.

They are plain frozen dataclasses with no Redis in them, so the API can turn them into JSON, the
autoscaler into a ``Snapshot``, and the tests can build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Where a job is in its life. The last four are terminal: the record then expires after the TTL."""

    QUEUED = "queued"  # in a stream, not started (or waiting for a retry)
    RUNNING = "running"  # a worker holds it
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the model rejected the input for good (PermanentJobError): no retry
    CANCELLED = "cancelled"  # cancelled while queued: workers skip it
    DEAD = "dead"  # attempts exhausted (model kept failing or workers kept dying): dead-lettered

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class Priority(StrEnum):
    """Two levels are enough to jump a backlog; each has its own stream, high is served first."""

    NORMAL = "normal"
    HIGH = "high"


class WorkerState(StrEnum):
    """A worker's lifecycle as it reports it in its heartbeat."""

    STARTING = "starting"  # loading the model; not Ready
    IDLE = "idle"  # Ready, waiting for a job
    BUSY = "busy"  # Ready, serving a job
    DRAINING = "draining"  # SIGTERM received: finishes its job, takes no new one


@dataclass(frozen=True, slots=True)
class Settings:
    """Protocol tunables shared by every party that talks to the same queues.

    ``max_attempts`` counts deliveries that started a job (first run included). ``result_ttl`` is
    how long a terminal job record stays readable. ``worker_ttl`` is how long a worker counts as
    alive after its last heartbeat (so it should be a few heartbeat intervals).
    """

    prefix: str = "jq"
    max_attempts: int = 3
    result_ttl: int = 24 * 3600
    idempotency_ttl: int = 24 * 3600
    completions_maxlen: int = 10_000
    dead_letter_maxlen: int = 10_000
    worker_ttl: float = 6.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.result_ttl, self.idempotency_ttl) < 1:
            raise ValueError("TTLs must be >= 1 s")
        if self.worker_ttl <= 0:
            raise ValueError("worker_ttl must be > 0")


@dataclass(frozen=True, slots=True)
class Job:
    """One job record as stored in ``jq:job:<id>``."""

    id: str
    queue: str
    model: str
    version: str
    status: JobStatus
    priority: Priority
    input: Any
    submitted_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    output: Any = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submitted:
    """Answer to a submission: ``created`` is False when an idempotency key (or a caller-chosen id)
    matched a job another request made, True for the request that made it (sent twice or not: see
    :func:`jobqueue.ops.submit_job`).

    ``status`` is the job's status as the submission found it: QUEUED for a created job, the
    earlier job's own (it may have run, or finished, since) for a match or a resend.
    """

    job_id: str
    created: bool
    status: JobStatus = JobStatus.QUEUED


class IdempotencyKeyReusedError(Exception):
    """A submission reused an idempotency key that an earlier, *different* request created a job with.

    Answering with the earlier job would hand the caller a result for a request it did not make
    (the key collided, or the client reused it by mistake), so the submission is refused and
    nothing is queued (the IETF Idempotency-Key draft answers this case with 422). ``job_id`` is the
    job the key is bound to, for callers that want to inspect it.
    """

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request (job {job_id})")
        self.key = key
        self.job_id = job_id


class MalformedJobError(ValueError):
    """A job record that does not decode: a field is missing or holds what its type cannot parse.

    A ``ValueError`` with the field named in the message, so a caller can act on the one record
    (a worker fails that job with this message; see :func:`jobqueue.consumer.start`) instead of
    treating a bare ``KeyError`` or ``JSONDecodeError`` as a bug in itself. Decoding the same record
    again gives the same answer: it is permanent, never worth a retry. ``field`` is the field's name
    ('' when unknown), for callers that report it apart from the message (the API's error body).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Entry:
    """A stream entry a worker has been handed (by XREADGROUP or XAUTOCLAIM)."""

    queue: str
    stream: str
    entry_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished attempt in the completions stream; ``duration`` is its service time in seconds.

    ``duration`` is None for an attempt lost with its worker: the reclaimer that dead-letters such
    a job writes its entry, and nobody timed the attempt. ``submitted_at`` is the job's
    submission time, copied from its record when the attempt finished; None on entries written
    before the field existed.
    """

    stream_id: str
    job_id: str
    finished_at: float
    duration: float | None
    status: JobStatus
    worker: str
    submitted_at: float | None = None

    @property
    def latency(self) -> float | None:
        """Submission to this finish, for a job whose answer is final; None while it is retried."""
        if self.submitted_at is None or not self.status.terminal:
            return None
        return self.finished_at - self.submitted_at


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's registry entry (``jq:worker:<name>``), written whole on every heartbeat."""

    name: str
    queue: str
    state: WorkerState
    started_at: float
    heartbeat_at: float
    job: str | None = None
    ready_at: float | None = None
    warmup_seconds: float | None = None
    pid: int | None = None

    @property
    def busy(self) -> bool:
        return self.state is WorkerState.BUSY


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """The counters of one queue alone: what the autoscaler's watch reads between ticks.

    ``arrivals_total`` is a monotonic counter: subtract the previous reading for the arrivals in
    between. ``waiting_exact`` is False when the consumer-group lag was unknown and ``waiting``
    fell back to ``XLEN - pending``. Reading them moves no cursor and costs one round trip.
    """

    queue: str
    waiting: int
    in_flight: int
    arrivals_total: int
    waiting_exact: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats(QueueCounts):
    """What the autoscaler reads each tick about one queue: its counts, plus completions and workers.

    ``completions`` are those after the ``since`` cursor passed to the read, oldest first; pass
    ``completions_cursor`` as ``since`` next time.
    """

    completions: tuple[Completion, ...]
    completions_cursor: str
    workers: tuple[WorkerInfo, ...]


@dataclass(frozen=True, slots=True)
class ListQueueStats:
    """A plain Redis list used as a queue (Celery, RQ, Bull, KEDA ``listLength``).

    ``arrivals_total`` is None when no counter key is configured: the caller then estimates
    arrivals from queue-length deltas plus completions.
    """

    key: str
    waiting: int
    arrivals_total: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream."""

    stream_id: str
    job_id: str
    attempts: int
    error: str
    dead_at: float
