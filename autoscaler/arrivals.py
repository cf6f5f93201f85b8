"""Jobs that arrived between two reads of the queue: the ``arrivals`` of a snapshot.

With a counter (our streams, or a list with ``arrivals_key``) they are the counter's delta
(a decrease is a reset: counted from zero when that many jobs are visible in the queue and its
completions, else, for that one interval, estimated as below, since a counter restored from an
older snapshot must not count every job it ever saw as new; a counter below zero, which only other
software can write, is estimated the same way). The count is never negative, whatever the counter
does: it reaches the decision log and the watch as well as the policy. Without a counter (a plain
list) arrivals are estimated by conservation: arrivals = Δ(waiting + in-flight) + completions,
clipped at 0. A plain list reports no completions, so this reduces to the growth of the list: jobs
that arrive and are taken within one tick are invisible and the estimate is biased LOW whenever
workers keep up (it measures backlog growth, not throughput). The backlog term of the policy still
sees the queue, so a list source reacts to backlog like KEDA does, only without the forecast's head
start. Configure an arrivals counter to remove the bias.
"""

from __future__ import annotations

from autoscaler.sources.base import QueueSignals


def arrivals_between(previous: QueueSignals, current: QueueSignals) -> int:
    """Jobs that arrived between two reads; never negative (see :func:`arrivals_after_reset`).

    The count goes into the snapshot, and from there into the decision log line and the watch's
    surge test as well as the policy: a negative count is no number of jobs, and a log or
    dashboard summing ``arrivals`` would read it as jobs that un-arrived. The policies treat a
    negative count as "no data", but nothing else does, so none is made here.
    """
    if current.arrivals_total is not None and previous.arrivals_total is not None:
        delta = current.arrivals_total - previous.arrivals_total
        return delta if delta >= 0 else arrivals_after_reset(previous, current)
    if current.arrivals_total is not None:  # the counter just appeared: nothing to difference yet
        return 0
    return queue_growth(previous, current)


def queue_growth(previous: QueueSignals, current: QueueSignals) -> int:
    """Arrivals by conservation: Δ(waiting + in flight) + completions, clipped at 0 (biased low)."""
    grown = (current.waiting + current.in_flight) - (previous.waiting + previous.in_flight)
    return max(0, grown + current.completions)


def arrivals_after_reset(previous: QueueSignals, current: QueueSignals) -> int:
    """Arrivals over an interval in which the counter went down.

    A counter can go down two ways, and its value alone cannot tell them apart. Redis lost its
    data (restart without persistence, FLUSHALL): the counter restarted from 0 and its value is the
    arrivals since, every one of them still waiting, in flight or among this read's completions.
    Or Redis came back from an older copy (an RDB snapshot, a replica promoted while it lagged):
    the counter went back to a value it had before, possibly millions of jobs ago, and taking that
    value as this interval's arrivals would scale straight to max_replicas and teach the
    forecaster and the standing pool a burst that never happened. So the value is believed only
    while that many jobs are visible; otherwise this one interval is estimated as if there were no
    counter (queue growth plus completions), and the next one differences the counter again.

    A counter below zero counts nothing: someone else's software wrote it (an ``arrivals_key``
    that is DECR'd on pop, a ``SET`` by hand). Its value, taken as arrivals since a reset, was a
    negative count in the snapshot and the decision log; the interval is estimated as above.
    """
    total = current.arrivals_total or 0
    visible = current.waiting + current.in_flight + current.completions
    if total < 0:
        return queue_growth(previous, current)
    return total if total <= visible else min(total, queue_growth(previous, current))
