"""A cheap read of how many jobs wait in several queues: one pipelined round trip, no history.

:func:`jobqueue.ops.read_queue_stats` is what the autoscaler needs each tick (completions, workers,
arrivals); an admission check in the API needs only the backlog, for every queue it serves, often.
This reads XINFO GROUPS and XLEN of both streams of each queue and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobqueue import codec
from jobqueue.driver import Command, Op, call
from jobqueue.keys import GROUP, Keyspace
from jobqueue.ops import DEFAULT_SETTINGS, _stream_counts
from jobqueue.types import Settings


@dataclass(frozen=True, slots=True)
class Backlog:
    """Jobs of one queue not yet started (``waiting``) and held by a worker (``in_flight``)."""

    waiting: int
    in_flight: int


def read_backlog(queues: Sequence[str], *, settings: Settings = DEFAULT_SETTINGS) -> Op[dict[str, Backlog]]:
    """Backlog of each queue in ``queues`` (four commands per queue, all in one round trip)."""
    if not queues:
        return {}
    ks = Keyspace(settings.prefix)
    batch: list[Command] = []
    for queue in queues:
        streams = ks.queue(queue).streams
        batch += [call("XINFO", "GROUPS", s, allow_error=True) for s in streams]
        batch += [call("XLEN", s) for s in streams]
    replies = yield batch
    out: dict[str, Backlog] = {}
    for i, queue in enumerate(queues):
        info_high, info_normal, len_high, len_normal = replies[4 * i : 4 * i + 4]
        high = _stream_counts(codec.group_info(info_high, GROUP), int(len_high))
        normal = _stream_counts(codec.group_info(info_normal, GROUP), int(len_normal))
        out[queue] = Backlog(waiting=high[0] + normal[0], in_flight=high[1] + normal[1])
    return out
