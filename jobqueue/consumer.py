"""Worker-side operations: take entries, run the job state machine, heartbeat, deregister.

Delivery is at-least-once through one consumer group (``workers``) per stream; the consumer name is
the worker's name (its pod name). The life of an entry:

1. :func:`fetch` hands out one new entry, the high-priority stream first; :func:`reclaim` hands out
   one entry another consumer has held idle for longer than the visibility timeout (its worker
   died: heartbeats renew the entries of live workers, see :func:`heartbeat`), scanning the pending
   entries from a caller-kept :class:`ReclaimCursor` so long lists are covered in turns;
   :func:`own_pending` hands back entries delivered to this consumer that it never learned of (a
   read whose reply was lost, a predecessor under the same name), without that wait.
2. :func:`start` decides atomically whether the entry runs: cancelled, finished, stale or vanished
   jobs are acknowledged and skipped; a job whose attempts are exhausted is dead-lettered, one
   whose attempts counter is corrupt or whose ``entry`` field is missing is failed; otherwise the
   job becomes ``running`` with ``attempts + 1`` (a record that then does not decode is the
   caller's to fail: see :func:`start`).
   A retried start carrying the same attempt token as the one that began the attempt returns that
   attempt without counting again.
3. :func:`finish` records the outcome if this worker still holds the job: ``succeeded``,
   ``failed`` (permanent), or a retryable error, which re-enqueues the job at the tail of its
   stream until ``max_attempts`` is reached and then dead-letters it with the error kept. Every
   finish appends (finished_at, service seconds) to the completions stream. Entries are
   acknowledged *and deleted*, so a stream holds only waiting and in-flight entries. A finish
   retried with the attempt's token returns what it recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from jobqueue import codec
from jobqueue.driver import Call, Eval, Op, call
from jobqueue.keys import GROUP, Keyspace, QueueKeys
from jobqueue.ops import DEFAULT_SETTINGS
from jobqueue.scripts import FINISH, FORGET_CONSUMERS, INDEX_WORKER, RENEW, START
from jobqueue.types import Entry, Job, JobStatus, Settings, WorkerInfo


class Outcome(StrEnum):
    """How one attempt ended, as the worker reports it to :func:`finish`."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent: the job is failed now, no retry
    ERROR = "error"  # retryable: re-enqueued, or dead-lettered once attempts are exhausted


class Discarded(StrEnum):
    """Why :func:`finish_attempt` recorded nothing (the FINISH script's answers)."""

    LOST = "lost"  # another worker holds the job now: its entry was reclaimed from this worker
    MISSING = "missing"  # the job's record is gone: deleted, expired, or lost with Redis's data


@dataclass(frozen=True, slots=True)
class Started:
    """Answer of :func:`start`: ``job`` is set iff the entry must run; else ``skipped`` says why
    (a job status such as ``cancelled``/``dead``, or ``missing``/``stale``; ``not-held`` when the
    entry was reclaimed by another worker before it started)."""

    job: Job | None
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class EncodedOutput:
    """A model output already encoded by :func:`jobqueue.codec.dumps`, which :func:`finish` stores as
    it is instead of encoding the output again.

    The worker encodes each output once, when it checks that it encodes at all, and hands the text
    on: encoding it a second time in :func:`finish` cost as much again on a large output, and could
    fail where the check passed (an output nested close to the encoder's recursion limit, encoded
    from a deeper stack)."""

    json: str


def _is_error(reply: Any, code: str) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith(code)


def ensure_groups(queue: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[None]:
    """Create both streams and their consumer group if missing (idempotent).

    The group starts at id 0 so entries added before any worker existed are delivered too.
    """
    qk = Keyspace(settings.prefix).queue(queue)
    replies = yield [
        call("XGROUP", "CREATE", s, GROUP, "0", "MKSTREAM", allow_error=True) for s in qk.streams
    ]
    for reply in replies:
        if isinstance(reply, Exception) and not _is_error(reply, "BUSYGROUP"):
            raise reply


def _read(consumer: str, streams: tuple[str, ...], block_ms: int | None) -> Call:
    block = ("BLOCK", block_ms) if block_ms is not None else ()
    ids = (">",) * len(streams)
    return call(
        "XREADGROUP",
        "GROUP",
        GROUP,
        consumer,
        "COUNT",
        1,
        *block,
        "STREAMS",
        *streams,
        *ids,
        allow_error=True,
    )


def fetch(
    queue: str, consumer: str, *, block_ms: int = 1000, settings: Settings = DEFAULT_SETTINGS
) -> Op[list[Entry]]:
    """Take the next new entry for ``consumer``: high priority first, else block up to ``block_ms``.

    Usually returns one entry or none. Two (one per stream, high first) are possible when both
    streams receive an entry in the same instant; both are then pending for this consumer and the
    caller must run both. Recreates the groups if they vanished (e.g. the server lost its data).
    The client's socket timeout must exceed ``block_ms``.
    """
    if block_ms < 1:
        raise ValueError("block_ms must be >= 1 (0 would block forever)")
    qk = Keyspace(settings.prefix).queue(queue)
    for _ in range(2):
        (high,) = yield [_read(consumer, (qk.high_stream,), None)]
        if not isinstance(high, Exception):
            got = codec.read_entries(queue, high)
            if got:
                return got
            (both,) = yield [_read(consumer, qk.streams, block_ms)]
            if not isinstance(both, Exception):
                return _high_first(queue, qk, both)
            high = both
        if not _is_error(high, "NOGROUP"):
            raise high
        yield from ensure_groups(queue, settings=settings)
    return []


def own_pending(queue: str, consumer: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[list[Entry]]:
    """Entries delivered to ``consumer`` and never acknowledged, high priority first (one per stream).

    A read that delivered an entry but whose reply was lost (a dropped connection: the client then
    sends the read again, which takes the *next* entry) leaves the entry pending under this
    consumer, unknown to it and renewed by nobody, so it waited a whole visibility timeout for a
    reclaim; so did the entries of a process restarted under the same name (a container restarted
    in its pod). A consumer that runs every entry it took before it reads again holds none of its
    own at that point: each one found then is such an orphan, and running it now is safe, since
    :func:`start` only runs a delivery its holder still holds and counts a new attempt for it.
    """
    qk = Keyspace(settings.prefix).queue(queue)
    ids = ("0",) * len(qk.streams)  # from the start of this consumer's own pending list
    (reply,) = yield [
        call(
            "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", 1, "STREAMS", *qk.streams, *ids, allow_error=True
        )
    ]
    if isinstance(reply, Exception):
        if _is_error(reply, "NOGROUP"):  # no group yet: nothing was ever delivered (fetch makes it)
            return []
        raise reply
    return _high_first(queue, qk, reply)


def _high_first(queue: str, qk: QueueKeys, reply: Any) -> list[Entry]:
    """An XREADGROUP reply over both streams as entries, the high-priority stream's first."""
    order = {s: i for i, s in enumerate(qk.streams)}
    return sorted(codec.read_entries(queue, reply), key=lambda e: order[e.stream])


RECLAIM_BATCHES = 10
"""XAUTOCLAIM round trips one :func:`reclaim` call may make per stream. Each examines at most ten
pending entries (the server scans COUNT * 10 of them and reclaim claims one at a time), so one
call looks at up to 100 entries per stream and a worker's cursor covers a longer list in turns."""


@dataclass(slots=True)
class ReclaimCursor:
    """Where :func:`reclaim` resumes its scan of each stream's pending entries list, per stream.

    Why it exists: XAUTOCLAIM examines at most ``COUNT * 10`` pending entries per call (a limit
    hard-coded in the server's ``xautoclaimCommand``) and returns the id to continue from. A scan
    that always restarts at ``0-0`` therefore never reaches an abandoned entry queued behind more
    entries than that, all held by live workers. The operation stays stateless; the caller (the
    worker) keeps one cursor across calls, and :func:`reclaim` advances it, wrapping to ``0-0`` at
    the end of the list so entries that went idle behind the cursor are found on the next lap.
    """

    positions: dict[str, str] = field(default_factory=dict)


def reclaim(
    queue: str,
    consumer: str,
    min_idle_ms: int,
    *,
    cursor: ReclaimCursor | None = None,
    max_batches: int = RECLAIM_BATCHES,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[Entry | None]:
    """Take over one entry idle (unrenewed) for ``min_idle_ms`` or more, high priority first.

    Scans each stream's pending entries from ``cursor``'s position (``0-0`` without one) for up to
    ``max_batches`` round trips, at most one lap. Without a cursor only the first
    ``max_batches * 10`` pending entries of a stream are ever looked at; a caller that reclaims
    repeatedly should keep a :class:`ReclaimCursor` so the whole list is covered in turns.
    """
    if max_batches < 1:
        raise ValueError("max_batches must be >= 1")
    qk = Keyspace(settings.prefix).queue(queue)
    for stream in qk.streams:
        start = cursor.positions.get(stream, "0-0") if cursor is not None else "0-0"
        lapped = start == "0-0"  # a scan from the list's head is one whole lap already
        for _ in range(max_batches):
            (reply,) = yield [
                call("XAUTOCLAIM", stream, GROUP, consumer, min_idle_ms, start, "COUNT", 1, allow_error=True)
            ]
            if isinstance(reply, Exception):
                if not _is_error(reply, "NOGROUP"):
                    raise reply
                if cursor is not None:  # no group, no list: a recreated one is scanned from its head
                    cursor.positions.pop(stream, None)
                break
            start = str(reply[0])
            if cursor is not None:
                cursor.positions[stream] = start
            for entry_id, fields in codec.stream_entries(reply[1]):
                return Entry(queue, stream, entry_id, fields.get("job", ""))
            if start == "0-0":  # end of the list: wrap to its head once, then leave this stream
                if lapped:
                    break
                lapped = True
    return None


def start(
    entry: Entry, worker: str, *, token: str = "", settings: Settings = DEFAULT_SETTINGS
) -> Op[Started]:
    """Atomically turn a delivered entry into a running attempt, or acknowledge and skip it.

    ``token`` makes the call safe to retry: the caller picks one per delivery it starts (a random
    hex string) and passes the same one on every retry of that start. If the script ran but its
    reply was lost, the retry finds the job already running for this worker under this token and
    returns it unchanged instead of counting a second attempt (which could dead-letter a job that
    never ran twice). Without a token (the default, kept for callers that never retry) every call
    starts a new attempt.

    Raises :class:`~jobqueue.types.MalformedJobError` when the started job's record does not decode.
    The attempt has begun by then (the job is ``running``, held by ``worker``), so the caller must
    end it with :func:`finish`: ``Outcome.FAILED`` and the error's text, since every later delivery
    would meet the same record. Raising instead of answering keeps :class:`Started` about jobs that
    run; a caller that let the error escape would leave the entry to be reclaimed, counted again
    and finally dead-lettered as a worker that "stopped heartbeating".
    """
    ks = Keyspace(settings.prefix)
    qk = ks.queue(entry.queue)
    keys = (ks.job(entry.job_id), entry.stream, qk.dead, qk.completions)
    args = (
        GROUP,
        entry.entry_id,
        worker,
        codec.fmt_time(time.time()),
        settings.max_attempts,
        settings.result_ttl,
        settings.dead_letter_maxlen,
        entry.job_id,
        ks.done_channel(entry.job_id),
        settings.completions_maxlen,
        token,
    )
    (reply,) = yield [Eval(START, keys, args)]
    if reply[0] == "run":
        return Started(job=codec.job_from_fields(codec.as_map(reply[1])))
    return Started(job=None, skipped=str(reply[0]))


def finish(
    entry: Entry,
    worker: str,
    outcome: Outcome,
    payload: Any,
    duration: float,
    *,
    token: str = "",
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[JobStatus | None]:
    """Record the outcome of an attempt; returns the job's new status.

    ``payload`` is the model output (JSON-serialisable, or an :class:`EncodedOutput`) for
    ``SUCCEEDED`` and the error text otherwise. ``QUEUED`` means the job will be retried. None means
    the result was discarded: this worker no longer held the job (it was reclaimed after the
    visibility timeout), or its record is gone; :func:`finish_attempt` says which.

    ``token``, the one the attempt was started with (see :func:`start`), makes the call safe to
    retry: if the script ran but its reply was lost, the retry returns the status it recorded,
    where without one it finds the job no longer running and answers None (a recorded result
    counted as discarded).
    """
    result = yield from finish_attempt(
        entry, worker, outcome, payload, duration, token=token, settings=settings
    )
    return result if isinstance(result, JobStatus) else None


def finish_attempt(
    entry: Entry,
    worker: str,
    outcome: Outcome,
    payload: Any,
    duration: float,
    *,
    token: str = "",
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[JobStatus | Discarded]:
    """:func:`finish`, saying why a discarded result was: ``Discarded.LOST`` when another worker
    holds the job (the stream is then left alone: the entry belongs to that consumer now),
    ``Discarded.MISSING`` when the job's record is gone (its entry is acknowledged and deleted). The
    worker reports them apart: a record lost with Redis's data (a restart without persistence)
    reported as reclaimed sent an operator looking for a second worker that never existed.
    """
    ks = Keyspace(settings.prefix)
    qk = ks.queue(entry.queue)
    if outcome is not Outcome.SUCCEEDED:
        text = str(payload)
    else:
        text = payload.json if isinstance(payload, EncodedOutput) else codec.dumps(payload)
    keys = (ks.job(entry.job_id), entry.stream, qk.completions, qk.dead)
    args = (
        GROUP,
        entry.entry_id,
        worker,
        codec.fmt_time(time.time()),
        outcome.value,
        text,
        repr(float(duration)),
        settings.max_attempts,
        settings.result_ttl,
        settings.completions_maxlen,
        settings.dead_letter_maxlen,
        entry.job_id,
        ks.done_channel(entry.job_id),
        token,
    )
    (reply,) = yield [Eval(FINISH, keys, args)]
    return Discarded(reply) if reply in (Discarded.LOST, Discarded.MISSING) else JobStatus(reply)


def heartbeat(
    info: WorkerInfo, *, lease: Entry | None = None, settings: Settings = DEFAULT_SETTINGS
) -> Op[bool | None]:
    """Write the worker's registry entry whole and renew the lease on the entry it is running.

    The entry expires after ``settings.worker_ttl`` unless renewed, and stale members of the queue's
    worker set are pruned here, so dead workers disappear without anyone cleaning up after them.
    Returns whether the lease is still held (None without a lease): False means the job was
    reclaimed by another worker.
    """
    ks = Keyspace(settings.prefix)
    qk = ks.queue(info.queue)
    fields = codec.worker_fields(info)
    batch: list[Call | Eval] = [
        call("HSET", ks.worker(info.name), *(x for kv in fields.items() for x in kv)),
        call("PEXPIRE", ks.worker(info.name), int(settings.worker_ttl * 1000)),
        Eval(INDEX_WORKER, (qk.workers,), (info.name, settings.worker_ttl)),
    ]
    if lease is not None:
        batch.append(Eval(RENEW, (lease.stream,), (GROUP, info.name, lease.entry_id), allow_error=True))
    replies = yield batch
    if lease is None:
        return None
    return replies[-1] == 1 or isinstance(replies[-1], Exception)  # an error is no proof of loss


def deregister(name: str, queue: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[None]:
    """Remove a worker from the registry and its consumer from the group (only if it holds nothing)."""
    ks = Keyspace(settings.prefix)
    qk = ks.queue(queue)
    yield [
        call("DEL", ks.worker(name)),
        call("ZREM", qk.workers, name),
        Eval(FORGET_CONSUMERS, qk.streams, (GROUP, name, 0)),
    ]


def forget_idle_consumers(queue: str, min_idle_ms: int, *, settings: Settings = DEFAULT_SETTINGS) -> Op[int]:
    """Delete consumers of dead workers (idle that long, nothing pending) so the group stays small."""
    qk = Keyspace(settings.prefix).queue(queue)
    (removed,) = yield [Eval(FORGET_CONSUMERS, qk.streams, (GROUP, "", min_idle_ms))]
    return int(removed)
