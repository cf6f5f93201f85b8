"""The one definition of the Redis key layout and job protocol (API, worker and autoscaler use it).

Quick use::

    from jobqueue import sync as jq            # or: from jobqueue import aio as jq (await ...)
    sub = jq.submit_job(r, "resnet:v1", {"image": "..."}, priority=Priority.HIGH)
    job = jq.wait_for_job(r, sub.job_id, timeout=30)
    stats = jq.read_queue_stats(r, "resnet:v1", since=previous.completions_cursor)

Modules: :mod:`~jobqueue.keys` (key layout), :mod:`~jobqueue.types` (value types),
:mod:`~jobqueue.ops` (client operations), :mod:`~jobqueue.consumer` (worker operations),
:mod:`~jobqueue.scripts` (Lua transitions), :mod:`~jobqueue.driver` (runs an operation on a sync
or asyncio client), :mod:`~jobqueue.sync` / :mod:`~jobqueue.aio` (the bound flavours),
:mod:`~jobqueue.errors` (which Redis errors are passing server states, to retry or answer 503),
:mod:`~jobqueue.backoff` (how long every party waits before it retries), :mod:`~jobqueue.retire`
(deleting a version's queue once nothing is left in it; :mod:`~jobqueue.retire_checks` decides,
:mod:`~jobqueue.retire_run` sequences it for ``python -m api.traffic retire``).
"""

from jobqueue.keys import GROUP, Keyspace, QueueKeys, queue_name, split_queue, validate_queue
from jobqueue.types import (
    Completion,
    DeadLetter,
    Entry,
    IdempotencyKeyReusedError,
    Job,
    JobStatus,
    ListQueueStats,
    MalformedJobError,
    Priority,
    QueueCounts,
    QueueStats,
    Settings,
    Submitted,
    WorkerInfo,
    WorkerState,
)

__all__ = [
    "GROUP",
    "Completion",
    "DeadLetter",
    "Entry",
    "IdempotencyKeyReusedError",
    "Job",
    "JobStatus",
    "Keyspace",
    "ListQueueStats",
    "MalformedJobError",
    "Priority",
    "QueueCounts",
    "QueueKeys",
    "QueueStats",
    "Settings",
    "Submitted",
    "WorkerInfo",
    "WorkerState",
    "queue_name",
    "split_queue",
    "validate_queue",
]
