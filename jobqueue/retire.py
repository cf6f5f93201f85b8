"""Retiring a model version: read what is left of its queue, move or sweep its waiting jobs, delete it.

A queue outlives the version it served: its streams, completions (up to ``completions_maxlen``
entries), dead letters, worker set and arrivals counter have no expiry, and its name stays in the
queues set and the model's keyed index, so every version ever deployed is paid for in memory and
asked on every keyed retry. These operations end that, without losing an accepted job:

- :func:`inspect_version` reads everything a decision needs (read only; its waiting jobs are
  classified by the same script that moves them, run dry, so a dry run says what a real one does);
- :func:`sweep_queue` deletes the entries no worker would run (cancelled, finished or vanished jobs:
  what ``START`` would skip) and, given a target version, moves the jobs a worker would run there;
  each batch is one script, so a job is never in both queues nor in neither, and an interrupted run
  is finished by running it again;
- :func:`retire_queue` deletes the queue in one script that first checks that nothing is waiting or
  in flight and that no job arrived since the caller looked.

Job records (``jq:job:<id>``), idempotency records and result-cache entries are left alone: they are
looked up by id or key, and each expires by itself. The decision of whether to retire at all (the
traffic split, live workers, dead letters) is :mod:`jobqueue.retire_checks`, pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobqueue import codec
from jobqueue.driver import Eval, Op, call
from jobqueue.keys import GROUP, Keyspace, QueueKeys, queue_name, split_queue
from jobqueue.ops import DEFAULT_SETTINGS, read_queue_stats
from jobqueue.scripts import RETIRE, SWEEP
from jobqueue.traffic import Weights, parse_split
from jobqueue.types import Settings

SWEEP_BATCH = 50
"""Entries one SWEEP script looks at. A script holds the server while it runs: measured on Valkey
with a 4,000-job backlog, a batch of 50 took 1 ms (median; 1.2 ms at most) to move, one of 200
took 8 ms (13 ms at most), longer per entry as well. 10,000 jobs still move in about a second."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """What a sweep of a queue's streams found: jobs a worker would run (moved when a target was
    given), entries it would skip (deleted), entries held by a consumer (in flight: left alone)."""

    runnable: int = 0
    dropped: int = 0
    held: int = 0

    def __add__(self, other: Sweep) -> Sweep:
        return Sweep(self.runnable + other.runnable, self.dropped + other.dropped, self.held + other.held)


@dataclass(frozen=True, slots=True)
class TargetState:
    """The version waiting jobs would move to: whether it was ever submitted to, its live workers."""

    queue: str
    listed: bool
    workers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VersionState:
    """Everything known about one version's queue when deciding to retire it (see the fields)."""

    model: str
    version: str
    queue: str
    listed: bool
    """In the queues set (it was submitted to and not retired since)."""
    keys: tuple[str, ...]
    """The queue's keys that exist (streams, counters, completions, dead letters, worker set)."""
    other_versions: tuple[str, ...]
    """The model's other versions in the queues set, sorted: where waiting jobs could go."""
    live_split: Weights | None
    """The model's live traffic split as the API reads it (None: none, configured weights apply)."""
    waiting: Sweep
    waiting_high: int
    """Of ``waiting.runnable``, the high-priority ones."""
    in_flight: int
    holders: Mapping[str, int]
    """Consumer (worker name) -> entries it holds unacknowledged."""
    workers: tuple[str, ...]
    """Workers of this queue whose registry entry has not expired (each worker's own WORKER_TTL)."""
    arrivals: int
    completions: int
    dead_letters: int
    keyed_until: float | None
    """Until when an idempotency record of this queue may live (the keyed index), if it may."""
    target: TargetState | None = None

    @property
    def exists(self) -> bool:
        return self.listed or bool(self.keys)


@dataclass(frozen=True, slots=True)
class Retired:
    """Answer of :func:`retire_queue`: ``done``, or why not (``entries``/``pending`` left, or the
    arrivals counter moved to ``arrivals``); ``dead_letters_kept`` when kept with an expiry."""

    done: bool
    entries: int = 0
    pending: int = 0
    arrivals: int | None = None
    dead_letters_kept: int = 0


def queue_keys(qk: QueueKeys) -> tuple[str, ...]:
    """The keys of a queue that a retire deletes (dead letters among them, unless kept)."""
    return (*qk.streams, qk.arrivals, qk.completions, qk.workers, qk.dead)


def _sweep_stream(stream: str, target_stream: str, target: str, dry: bool, settings: Settings) -> Op[Sweep]:
    """:class:`Sweep` of one stream, paged :data:`SWEEP_BATCH` entries at a time from its head."""
    ks = Keyspace(settings.prefix)
    _, target_version = split_queue(target) if target else ("", "")
    total, start = Sweep(), "-"
    while True:
        (reply,) = yield [call("XRANGE", stream, start, "+", "COUNT", SWEEP_BATCH)]
        entries = codec.stream_entries(reply)
        if not entries:
            return total
        jobs = tuple(ks.job(fields.get("job", "")) for _, fields in entries)
        args = (GROUP, target, target_version, "1" if dry else "", *(i for i, _ in entries))
        (counts,) = yield [Eval(SWEEP, (stream, target_stream, *jobs), args)]
        total = total + Sweep(*(int(c) for c in counts))
        if len(entries) < SWEEP_BATCH:
            return total
        start = f"({entries[-1][0]}"


def sweep_queue(
    queue: str, target: str | None = None, *, dry: bool = False, settings: Settings = DEFAULT_SETTINGS
) -> Op[tuple[Sweep, Sweep]]:
    """Sweep both streams of ``queue``, high priority first: (high, normal).

    Entries no worker would run are deleted; with ``target`` (another queue) the jobs a worker
    would run move to its stream of the same priority, at its tail, keeping their attempts and
    their ids (a client polling one finds it served by the target). ``dry`` counts without writing.
    Moved jobs are not counted as arrivals of the target: they arrived once, and the target's
    autoscaler sees them as its backlog.
    """
    ks = Keyspace(settings.prefix)
    source = ks.queue(queue)
    to = ks.queue(target) if target else source
    high = yield from _sweep_stream(source.high_stream, to.high_stream, target or "", dry, settings)
    normal = yield from _sweep_stream(source.stream, to.stream, target or "", dry, settings)
    return high, normal


def _holders(replies: list[Any]) -> dict[str, int]:
    """Consumer -> pending count, summed over XPENDING summaries (errors: no group, no stream)."""
    out: dict[str, int] = {}
    for reply in replies:
        if isinstance(reply, Exception) or not reply or not reply[3]:
            continue
        for name, count in reply[3]:
            out[str(name)] = out.get(str(name), 0) + int(count)
    return out


def _workers(queue: str, settings: Settings) -> Op[tuple[str, ...]]:
    stats = yield from read_queue_stats(queue, limit=1, settings=settings)
    return tuple(w.name for w in stats.workers if w.queue == queue)


def inspect_version(
    model: str, version: str, move_to: str | None = None, *, settings: Settings = DEFAULT_SETTINGS
) -> Op[VersionState]:
    """Read everything :mod:`jobqueue.retire_checks` decides on; writes nothing. Invalid names raise
    ``ValueError``. ``move_to`` (a version of the same model) adds its :class:`TargetState` and
    classifies the waiting jobs as the move would (a dry run of the same script)."""
    ks = Keyspace(settings.prefix)
    queue = queue_name(model, version)
    target = queue_name(model, move_to) if move_to else None
    qk = ks.queue(queue)
    names = queue_keys(qk)
    replies = yield [
        call("SMEMBERS", ks.queues),
        call("HGET", ks.traffic, model),
        *(call("EXISTS", k) for k in names),
        *(call("XPENDING", s, GROUP, allow_error=True) for s in qk.streams),
        call("GET", qk.arrivals),
        call("XLEN", qk.completions),
        call("XLEN", qk.dead),
        call("ZSCORE", ks.keyed_queues(model), queue),
    ]
    queues, split, *rest = replies
    exists, pending = rest[: len(names)], rest[len(names) : len(names) + 2]
    arrivals, completions, dead, keyed = rest[len(names) + 2 :]
    holders = _holders(pending)
    high, normal = yield from sweep_queue(queue, target, dry=True, settings=settings)
    workers = yield from _workers(queue, settings)
    target_state = None
    if target is not None:
        target_state = TargetState(target, target in queues, (yield from _workers(target, settings)))
    return VersionState(
        model=model,
        version=version,
        queue=queue,
        listed=queue in queues,
        keys=tuple(k for k, e in zip(names, exists, strict=True) if int(e)),
        other_versions=tuple(
            sorted(v for q in queues for m, v in [split_queue(q)] if m == model and q != queue)
        ),
        live_split=None if split is None else parse_split(model, split),
        waiting=high + normal,
        waiting_high=high.runnable,
        in_flight=sum(holders.values()),
        holders=holders,
        workers=workers,
        arrivals=int(arrivals or 0),
        completions=int(completions),
        dead_letters=int(dead),
        keyed_until=float(keyed) if keyed is not None else None,
        target=target_state,
    )


def retire_queue(
    queue: str,
    *,
    expected_arrivals: int | None,
    keep_dead_letters_seconds: int | None,
    settings: Settings = DEFAULT_SETTINGS,
) -> Op[Retired]:
    """Delete ``queue``'s keys and its membership in the queues set and the model's keyed index, in
    one script, unless a job is left in it or (``expected_arrivals``) one arrived since then.

    Dead letters are deleted, or kept ``keep_dead_letters_seconds`` (then they expire: evidence to
    read, not a key kept for ever).
    """
    ks = Keyspace(settings.prefix)
    qk = ks.queue(queue)
    model, _ = split_queue(queue)
    keys = (*queue_keys(qk), ks.queues, ks.keyed_queues(model))
    dead = "delete" if keep_dead_letters_seconds is None else keep_dead_letters_seconds
    expected = "" if expected_arrivals is None else expected_arrivals
    (reply,) = yield [Eval(RETIRE, keys, (queue, model, expected, dead, GROUP))]
    kind = str(reply[0])
    if kind == "busy":
        return Retired(False, entries=int(reply[1]), pending=int(reply[2]))
    if kind == "arrived":
        return Retired(False, arrivals=int(reply[1]))
    return Retired(True, dead_letters_kept=int(reply[1]))
