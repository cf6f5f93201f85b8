"""Result cache: an identical request (same queue, i.e. model and version, and same input) within a
TTL is answered with an earlier job's output instead of running the model again.

The cache is an index, not a copy: ``<queue>:cache:<sha256 of the input>`` holds the id of the first
job submitted for that input, for ``ttl`` seconds from its submission. A lookup follows it to the
job record and counts as a hit only if that job succeeded. A job still queued or running is a miss
that keeps the entry (it will be the hit once it succeeds); a failed, cancelled or expired job is
a miss that drops the entry, so the next submission's job takes its place. Outputs thus live once,
in the job record, under its result TTL, and nothing has to be written when a job finishes: the
worker needs no cache logic at all.

Only successes are served, and in-flight jobs are not shared between requests, so a client can
never see (or cancel) a job another client is still waiting for. With authentication on, entries
are per caller (``scope``, the API's digest of the key): a hit hands over the earlier job's id,
which reads its metadata, and one tenant's job is not another's to read.
"""

from __future__ import annotations

from typing import Any

from jobqueue import codec
from jobqueue.driver import Op, call
from jobqueue.keys import Keyspace
from jobqueue.ops import DEFAULT_SETTINGS, get_job
from jobqueue.types import Job, JobStatus, Settings


def input_digest(input: Any) -> str:
    """SHA-256 of the input's canonical JSON (sorted keys), so key order does not defeat the cache."""
    return codec.digest(input)


def cache_key(
    queue: str, input: Any, *, scope: str | None = None, settings: Settings = DEFAULT_SETTINGS
) -> str:
    """The entry for ``input`` on ``queue``, shared by every caller, or only by ``scope``'s."""
    digest = input_digest(input if scope is None else {"scope": scope, "input": input})
    return Keyspace(settings.prefix).queue(queue).result_cache(digest)


def lookup(
    queue: str, input: Any, *, scope: str | None = None, settings: Settings = DEFAULT_SETTINGS
) -> Op[Job | None]:
    """The succeeded job cached for this input, or None.

    One round trip when no entry exists; two when it names a job still queued or running (its
    status alone is read: the whole record, some forty fields through the client's parser, cost
    a busy API more than the round trip, for a miss); three on a hit.
    """
    key = cache_key(queue, input, scope=scope, settings=settings)
    (job_id,) = yield [call("GET", key)]
    if not job_id:
        return None
    (status,) = yield [call("HGET", Keyspace(settings.prefix).job(job_id), "status")]
    if status == JobStatus.SUCCEEDED.value:
        job = yield from get_job(job_id, settings=settings)
        if job is not None and job.status is JobStatus.SUCCEEDED:
            return job
        status = None if job is None else job.status.value  # gone, or changed in between
    if status is None or _terminal(status):  # will never succeed: the next job takes the entry
        yield [call("DEL", key)]
    return None


def _terminal(status: str) -> bool:
    """Whether a job in ``status`` will never succeed now; an unknown status counts as such."""
    try:
        return JobStatus(status).terminal
    except ValueError:
        return True


def remember(
    queue: str,
    input: Any,
    job_id: str,
    ttl: int,
    *,
    scope: str | None = None,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[None]:
    """Point the cache entry for this input at ``job_id`` for ``ttl`` seconds, unless an entry
    exists (a job for this input is still in progress: it stays the one to be served)."""
    if ttl < 1:
        raise ValueError("cache ttl must be >= 1 s")
    codec.dumps(input)  # same serialisability rule as submissions
    yield [call("SET", cache_key(queue, input, scope=scope, settings=settings), job_id, "EX", ttl, "NX")]
