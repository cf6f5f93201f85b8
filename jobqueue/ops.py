"""Client-side operations: submit, inspect, cancel and wait for jobs; read queue statistics.

Each function returns an *operation* (see :mod:`jobqueue.driver`); run it with
``jobqueue.sync.<name>(redis, ...)`` or ``await jobqueue.aio.<name>(redis, ...)``, which bind these
same functions to a client. Worker-side operations are in :mod:`jobqueue.consumer`.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ResponseError

from jobqueue import codec
from jobqueue.driver import Arg, Command, Eval, Op, Sleep, call
from jobqueue.keys import GROUP, Keyspace, QueueKeys, split_queue, validate_queue
from jobqueue.scripts import BIND_KEY, CANCEL, INDEX_KEYED, LIVE_WORKERS, SUBMIT
from jobqueue.types import (
    Completion,
    DeadLetter,
    IdempotencyKeyReusedError,
    Job,
    JobStatus,
    ListQueueStats,
    Priority,
    QueueCounts,
    QueueStats,
    Settings,
    Submitted,
)

DEFAULT_SETTINGS = Settings()

_GONE_CHECKS = 3
"""Round trips a submission spends checking that the job its idempotency key names still exists. One
is enough unless other submissions with the same key replace the record in between; bounded anyway."""


def request_fingerprint(
    model: str,
    version: str | None,
    input: Any,
    priority: Priority | str = Priority.NORMAL,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Digest of a submission as its client made it, stored with its idempotency key.

    A retry carrying the key must be the same request, or it would be answered with a job made
    for another one. ``version`` is the version the client *named* (None when the router chose
    it), so a retry of an unversioned request matches whatever version it was routed to. The
    digest is of canonical JSON, so the key order of ``input`` and ``metadata`` does not matter.
    """
    return codec.digest(
        {
            "model": model,
            "version": version,
            "input": input,
            "priority": _priority(priority).value,
            "metadata": dict(metadata or {}),
        }
    )


def _priority(value: Priority | str) -> Priority:
    """``value`` as a :class:`Priority`; its string values (``"high"``) are accepted, as JSON has them."""
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in Priority)
        raise ValueError(f"priority must be one of {choices}, got {value!r}") from None


def idempotency_holder(
    model: str,
    queues: list[str],
    key: str,
    scope: str | None = None,
    *,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[str | None]:
    """The first queue of ``model`` that remembers idempotency ``key`` (in ``scope``), or None.

    A key is remembered per queue, i.e. per model version. A request that names no version is
    routed by the traffic split, which may change between a submission and its retry (a canary
    ramp, a rollback): the retry has to go where the key is, not where the split now points.
    ``queues`` (the versions the caller routes to now, the one it chose first) and every other
    queue of ``model`` that may still hold a record (``Keyspace.keyed_queues``: each keyed
    submission notes its queue there until its record expires) are asked, the chosen one always: a
    rollback that takes a version out of the split (``v1=100`` after ``v1=90, v2=10``) leaves the
    caller no longer knowing it, and the retry of a request the canary took queued a second job.
    Versions retired for longer than the idempotency TTL are not asked: each one ever used cost a
    command per keyed submission. Before the model's first keyed submission since that index
    exists, every queue of ``model`` ever submitted to is asked (``Keyspace.queues``), as before.
    With one queue to ask there is nothing to ask: the submission itself finds the key there.
    A key whose job is gone is remembered nowhere (see :func:`submit_job`). One round trip when
    one queue is left to ask, two when none remembers the key, three when one does (one more
    before the index exists).
    """
    ks = Keyspace(settings.prefix)
    (indexed,) = yield [call("ZRANGEBYSCORE", ks.keyed_queues(model), time.time(), "+inf")]
    candidates = [*queues]
    if _INDEXED not in indexed:  # no keyed submission since the index exists
        (indexed,) = yield [call("SMEMBERS", ks.queues)]
    else:  # the queues routed to now are asked only if they may hold a record too
        candidates = [*queues[:1], *(q for q in queues[1:] if q in indexed)]
    known = set(queues)
    others = (q for q in set(indexed) - known - {_INDEXED} if split_queue(q)[0] == model)
    queues = [*candidates, *sorted(others)]
    if len(queues) <= 1:
        return None
    named = yield [call("HGET", ks.queue(q).idempotency(key, scope), "job", allow_error=True) for q in queues]
    # A record of the old format (a string: WRONGTYPE here) holds its queue as before; a record whose
    # job is gone holds nothing, as :func:`submit_job` forgets it (the split decides again).
    ids = {i: str(v) for i, v in enumerate(named) if v is not None and not isinstance(v, Exception)}
    alive: dict[int, Any] = {}
    if ids:
        alive = dict(zip(ids, (yield [call("EXISTS", ks.job(v)) for v in ids.values()]), strict=True))
    held = (isinstance(v, Exception) or bool(alive.get(i)) for i, v in enumerate(named))
    return next((q for q, h in zip(queues, held, strict=True) if h), None)


_INDEXED = ""
"""The member of a model's ``keyed_queues`` that says the index is kept (see ``INDEX_KEYED``)."""


def _note_keyed(ks: Keyspace, queue: str, settings: Settings) -> Eval:
    """The note that ``queue`` may hold an idempotency record for ``settings.idempotency_ttl``."""
    model, _ = split_queue(queue)
    now = time.time()
    until = now + settings.idempotency_ttl
    return Eval(INDEX_KEYED, (ks.keyed_queues(model), ks.queues), (queue, model, until, now))


def idempotency_known(
    queue: str, key: str, scope: str | None = None, *, settings: Settings = DEFAULT_SETTINGS
) -> Op[bool]:
    """Whether ``queue`` holds a record of idempotency ``key`` (in ``scope``), of any format.

    A record whose job is gone counts too: :func:`submit_job` decides what it means. Read beside
    a result-cache lookup, so that a key bound to a request decides before the cache does.
    """
    record = Keyspace(settings.prefix).queue(queue).idempotency(key, scope)
    (exists,) = yield [call("EXISTS", record)]
    return bool(exists)


def idempotency_live(
    queue: str, key: str, scope: str | None = None, *, settings: Settings = DEFAULT_SETTINGS
) -> Op[bool]:
    """Whether idempotency ``key`` (in ``scope``) names a job of ``queue`` that still exists: a
    submission with it matches that job and queues nothing. A record whose job is gone is forgotten
    by :func:`submit_job`, which queues a new job. Two round trips (the record, then its job); the
    record of the old format (a string: the job id alone) is read alike."""
    ks = Keyspace(settings.prefix)
    record = ks.queue(queue).idempotency(key, scope)
    reads: list[Command] = [call("HGET", record, "job", allow_error=True)]
    reads.append(call("GET", record, allow_error=True))  # the old format
    named, plain = yield reads  # one of them WRONGTYPE, or both nil: no record
    job_id = next((v for v in (named, plain) if v is not None and not isinstance(v, Exception)), None)
    if job_id is None:
        return False
    (exists,) = yield [call("EXISTS", ks.job(str(job_id)))]
    return bool(exists)


def bind_idempotency_key(
    queue: str,
    key: str,
    job_id: str,
    fingerprint: str,
    scope: str | None = None,
    *,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[bool]:
    """Make idempotency ``key`` (in ``scope``) name ``job_id``, an existing job of ``queue``, for the
    request ``fingerprint``; True if it does now.

    For a request answered with an earlier job instead of a new one (a result-cache hit): the key
    it carried must answer its retries with that job, as :func:`submit_job` would have bound it.
    Unbound, a retry after the cache entry expired queued a second job, and the key could be used
    for another request without the 422. False when the key is bound already (to this job and
    request only if True) or the job is gone: then submit as usual, and :func:`submit_job` decides.
    """
    ks = Keyspace(settings.prefix)
    record = ks.queue(queue).idempotency(key, scope)
    args = (job_id, fingerprint, settings.idempotency_ttl)
    (bound, _) = yield [Eval(BIND_KEY, (record, ks.job(job_id)), args), _note_keyed(ks, queue, settings)]
    return bool(int(bound))


def submit_job(
    queue: str,
    input: Any,
    *,
    priority: Priority | str = Priority.NORMAL,
    idempotency_key: str | None = None,
    idempotency_scope: str | None = None,
    fingerprint: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    request_token: str | None = None,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[Submitted]:
    """Create a job record and enqueue it, atomically, in one round trip.

    ``input`` and ``metadata`` must be JSON-serialisable and ``priority`` a :class:`Priority` or one
    of its values (checked before anything is written). With an ``idempotency_key`` (remembered for
    ``settings.idempotency_ttl`` per queue, and per ``idempotency_scope`` when given: the API passes
    a digest of the caller's API key so tenants never share keys) a repeated submission of the same
    request returns the first job's id with ``created=False`` and enqueues nothing; a submission
    that reuses the key for a different request raises :class:`IdempotencyKeyReusedError` and writes
    nothing. "The same request" means an equal ``fingerprint``, by default
    :func:`request_fingerprint` of this call's queue, input, priority and metadata; a caller that
    routes requests to queues passes the fingerprint of what its client sent instead. A
    caller-chosen ``job_id`` whose record still exists also returns ``created=False``. Counts one
    arrival per created job.

    A key is remembered for ``idempotency_ttl`` *at most*: its record answers for its job only while
    the job's record exists, and that one expires ``result_ttl`` after the job ended (the workers'
    setting, which may be shorter). A key whose job is gone is forgotten, as if its record had
    expired, and the submission creates a new job: answering ``created=False`` with the id of a job
    that no longer exists (404) would leave the client neither the result nor a way to get one.
    So a retry costs a second round trip, which checks the earlier job; a first submission, one.

    ``request_token`` names this request (default: a new random one per call) and is stored with
    the job. ``created`` is True for the request that created the job even when the script ran
    twice for it: a Redis client that loses the reply with its connection sends the command again
    (redis-py does, once, with the retry policy the API and the workers set), and that resend finds
    the job it wrote, by its idempotency key or its id. Without the token it was answered
    ``created=False``, as if another request had made the job, and the one client that did was
    told its request was a duplicate. The resend carries the same token (the same command, sent
    again), so the script tells it from any other request, which is answered ``created=False``. A
    caller that retries a submission by itself after a lost reply passes the same ``job_id`` and
    ``request_token`` each time for the same answer: a job is matched to its request by both.
    """
    if request_token is not None and not request_token:
        raise ValueError("request_token must not be empty (None draws a new one)")
    priority = _priority(priority)
    ks = Keyspace(settings.prefix)
    qk = ks.queue(queue)
    model, version = split_queue(queue)
    job = Job(
        id=job_id or uuid.uuid4().hex,
        queue=queue,
        model=model,
        version=version,
        status=JobStatus.QUEUED,
        priority=priority,
        input=input,
        submitted_at=time.time(),
        metadata=dict(metadata or {}),
    )
    fields = codec.job_fields(job)  # serialises input: fails here, before any write
    stream = qk.high_stream if priority is Priority.HIGH else qk.stream
    keys = [ks.job(job.id), stream, qk.arrivals, ks.queues]
    if idempotency_key is not None:
        keys.append(qk.idempotency(idempotency_key, idempotency_scope))
        if fingerprint is None:
            fingerprint = request_fingerprint(model, version, input, priority, metadata)
    pairs = [x for kv in fields.items() for x in kv]
    head: list[Arg] = [job.id, GROUP, queue, settings.idempotency_ttl, fingerprint or ""]
    token = request_token or secrets.token_hex(16)
    batch: list[Command] = [Eval(SUBMIT, tuple(keys), (*head, "", token, *pairs))]
    if idempotency_key is not None:
        batch.append(_note_keyed(ks, queue, settings))  # in the same round trip
    reply = (yield batch)[0]
    outcome, the_id = int(reply[0]), str(reply[1])
    checked = None
    # The key matched an earlier job: it counts only while that job's record exists (see the docstring).
    for _ in range(_GONE_CHECKS):
        if outcome == 1 or idempotency_key is None or the_id == checked:
            break
        checked = the_id
        (reply,) = yield [Eval(SUBMIT, (*keys, ks.job(checked)), (*head, checked, token, *pairs))]
        outcome, the_id = int(reply[0]), str(reply[1])
    if outcome < 0:
        raise IdempotencyKeyReusedError(str(idempotency_key), the_id)
    return Submitted(job_id=the_id, created=outcome == 1, status=_found_status(reply))


def _found_status(reply: Any) -> JobStatus:
    """The status SUBMIT found an earlier job in (its third element), QUEUED for a created job.

    A status that is not one (a corrupt record) reads as QUEUED, as every match did before the
    status was returned: the submission is answered, and reading the job reports the damage."""
    try:
        return JobStatus(str(reply[2])) if len(reply) > 2 and reply[2] else JobStatus.QUEUED
    except ValueError:
        return JobStatus.QUEUED


def get_job(job_id: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[Job | None]:
    """The job record, or None if it never existed or expired after its result TTL."""
    (fields,) = yield [call("HGETALL", Keyspace(settings.prefix).job(job_id))]
    fields = codec.as_map(fields)
    return codec.job_from_fields(fields) if fields else None


def cancel_job(job_id: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[JobStatus | None]:
    """Cancel a queued job; returns the job's status afterwards (None if there is no such job).

    Only a queued job can be cancelled: ``CANCELLED`` means it is (now or already) cancelled, any
    other status means it was too late. Workers acknowledge and skip a cancelled entry.
    """
    ks = Keyspace(settings.prefix)
    args = (codec.fmt_time(time.time()), settings.result_ttl, ks.done_channel(job_id))
    (status,) = yield [Eval(CANCEL, (ks.job(job_id),), args)]
    return JobStatus(status) if status else None


def wait_for_job(
    job_id: str,
    timeout: float,
    *,
    poll_min: float = 0.02,
    poll_max: float = 0.25,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[Job | None]:
    """Poll until the job is terminal or ``timeout`` seconds pass; returns its latest record.

    Polling (with back-off from ``poll_min`` to ``poll_max``) costs one HGETALL per poll and needs no
    dedicated connection, which suits a web server better than a pub/sub subscription per request.
    Push-style waiters can instead subscribe to ``Keyspace.done_channel(job_id)`` and then read.
    """
    deadline = time.monotonic() + timeout
    delay = poll_min
    while True:
        job = yield from get_job(job_id, settings=settings)
        left = deadline - time.monotonic()
        if job is None or job.status.terminal or left <= 0:
            return job
        yield Sleep(min(delay, left))
        delay = min(delay * 2, poll_max)


def _stream_counts(info: dict[str, Any] | None, length: int) -> tuple[int, int, bool]:
    """(waiting, in flight, exact) for one stream from its group row and XLEN.

    The group lag is exact but Redis reports it as null when deletions leave gaps it cannot count
    across; then ``XLEN - pending`` is used, which is exact as long as only acknowledged entries are
    deleted (this protocol's rule) and counts cancelled-but-unread entries as waiting either way.
    """
    if info is None:  # no group yet: nothing was ever read
        return length, 0, True
    pending = int(info.get("pending") or 0)
    lag = info.get("lag")
    if lag is None:
        return max(0, length - pending), pending, False
    return int(lag), pending, True


def _count_commands(qk: QueueKeys) -> list[Command]:
    """The reads behind :class:`QueueCounts`: the arrivals counter, then each stream's group and length."""
    return [
        call("GET", qk.arrivals),
        *(call("XINFO", "GROUPS", s, allow_error=True) for s in qk.streams),
        *(call("XLEN", s) for s in qk.streams),
    ]


def _queue_counts(queue: str, replies: list[Any]) -> QueueCounts:
    """:class:`QueueCounts` from the replies to :func:`_count_commands`, in its order."""
    arrivals, info_high, info_normal, len_high, len_normal = replies
    counts = [
        _stream_counts(codec.group_info(info, GROUP), int(length))
        for info, length in ((info_high, len_high), (info_normal, len_normal))
    ]
    return QueueCounts(
        queue=queue,
        waiting=sum(c[0] for c in counts),
        in_flight=sum(c[1] for c in counts),
        arrivals_total=int(arrivals or 0),
        waiting_exact=all(c[2] for c in counts),
    )


def read_queue_counts(queue: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[QueueCounts]:
    """Waiting, in-flight and arrivals counts of a queue in one round trip, moving no cursor.

    The autoscaler's watch reads this every second between ticks; the tick's
    :func:`read_queue_stats` still returns every completion since its own cursor.
    """
    qk = Keyspace(settings.prefix).queue(queue)
    replies = yield _count_commands(qk)
    return _queue_counts(queue, replies)


def read_queue_stats(
    queue: str,
    *,
    since: str | None = None,
    limit: int = 1000,
    max_heartbeat_age: float | None = None,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[QueueStats]:
    """Everything the autoscaler observes about a queue, in two pipelined round trips.

    ``since`` is the ``completions_cursor`` of the previous read: completions after it are returned
    (oldest first, at most ``limit``; the cursor then advances only that far, so nothing is skipped).
    Without ``since`` the newest ``limit`` completions are returned, which seeds service-time
    estimates on the first tick. Workers are those whose registry entry has not expired (each
    worker's own ``worker_ttl``) and, with ``max_heartbeat_age``, whose last heartbeat is at most
    that many seconds old: a reader's own, tighter bound. The server's clock decides both, so the
    reader's clock cannot hide or resurrect a worker.
    """
    if max_heartbeat_age is not None and not max_heartbeat_age > 0:
        raise ValueError("max_heartbeat_age must be > 0")
    ks = Keyspace(settings.prefix)
    qk = ks.queue(queue)
    completions = (
        _completions_after(qk, since, limit)
        if since
        else call("XREVRANGE", qk.completions, "+", "-", "COUNT", limit)
    )
    counting = _count_commands(qk)
    members = (
        call("ZRANGE", qk.workers, 0, -1)
        if max_heartbeat_age is None
        else Eval(LIVE_WORKERS, (qk.workers,), (max_heartbeat_age,))
    )
    replies = yield [*counting, completions, members]
    counts = _queue_counts(queue, replies[: len(counting)])
    done, names = replies[len(counting) :]
    entries = codec.stream_entries(done)
    if not since:
        entries.reverse()
    workers_raw = (yield [call("HGETALL", ks.worker(n)) for n in names]) if names else []
    workers = [codec.worker_from_fields(f) for f in map(codec.as_map, workers_raw) if f]
    return QueueStats(
        queue=queue,
        waiting=counts.waiting,
        in_flight=counts.in_flight,
        arrivals_total=counts.arrivals_total,
        completions=tuple(codec.completion_from_entry(i, f) for i, f in entries),
        completions_cursor=entries[-1][0] if entries else (since or "0-0"),
        workers=tuple(sorted(workers, key=lambda w: w.name)),
        waiting_exact=counts.waiting_exact,
    )


def _completions_after(qk: QueueKeys, since: str, limit: int) -> Command:
    return call("XRANGE", qk.completions, f"({since}", "+", "COUNT", limit)


def read_completions(
    queue: str, *, since: str, limit: int = 1000, settings: Settings = DEFAULT_SETTINGS
) -> Op[tuple[Completion, ...]]:
    """At most ``limit`` completions after the stream id ``since``, oldest first, in one round trip.

    For a reader that found :func:`read_queue_stats`'s batch full and catches up with the rest:
    the counts and workers that one read with its batch are not worth reading again per batch.
    """
    (reply,) = yield [_completions_after(Keyspace(settings.prefix).queue(queue), since, limit)]
    return tuple(codec.completion_from_entry(i, f) for i, f in codec.stream_entries(reply))


def read_list_queue_stats(key: str, arrivals_key: str | None = None) -> Op[ListQueueStats]:
    """A plain list queue (Celery/RQ/Bull/KEDA ``listLength``): LLEN and an optional INCR counter.

    The key names are the other system's, given verbatim by the operator, hence not in the keyspace.
    """
    batch: list[Command] = [call("LLEN", key)]
    if arrivals_key is not None:
        # Its error reply comes back here, to be named with its key: the list's own error (first
        # in the batch) still raises as it is.
        batch.append(call("GET", arrivals_key, allow_error=True))
    replies = yield batch
    arrivals = _counter(arrivals_key, replies[1]) if arrivals_key is not None else None
    return ListQueueStats(key=key, waiting=int(replies[0]), arrivals_total=arrivals)


class CounterKeyError(ResponseError):
    """A key read as a counter (a list queue's arrivals key) holds something else: a key of another
    type (the server's WRONGTYPE) or a value that is not an integer. ``key`` names it and
    ``problem`` says what it holds, for a message in the caller's own terms."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


_INTEGRAL = re.compile(r"[-+]?[0-9]{1,30}(?:\.0*)?")
"""What a counter holds: an integer as INCR writes it, or written as a float with nothing after the
point ("12.0": a client's SET of a float, or INCRBYFLOAT's input); 30 digits is far beyond any count."""


def _counter(key: str, reply: Any) -> int:
    """The value of the counter at ``key`` (0 when it does not exist yet)."""
    if isinstance(reply, Exception):
        raise CounterKeyError(
            key, f"{reply} (a counter is a string key the producer INCRs once per job it pushes)"
        ) from reply
    if reply is None:
        return 0
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    if not _INTEGRAL.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise CounterKeyError(key, f"holds {shown!r}, not an integer counter")
    return int(text.split(".", 1)[0])


def list_queues(*, settings: Settings = DEFAULT_SETTINGS) -> Op[list[str]]:
    """Every queue that has ever had a submission, sorted (for discovery by the autoscaler)."""
    (members,) = yield [call("SMEMBERS", Keyspace(settings.prefix).queues)]
    return sorted(members)


def read_dead_letters(
    queue: str, *, count: int = 100, settings: Settings = DEFAULT_SETTINGS
) -> Op[list[DeadLetter]]:
    """The newest ``count`` dead letters of a queue, newest first."""
    dead = Keyspace(settings.prefix).queue(validate_queue(queue)).dead
    (reply,) = yield [call("XREVRANGE", dead, "+", "-", "COUNT", count)]
    return [codec.dead_letter_from_entry(i, f) for i, f in codec.stream_entries(reply)]
