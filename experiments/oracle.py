"""The zero-wait clairvoyant oracle: the cheapest pool that serves every job the moment it arrives.

Serve each job at arrival; the pods needed at time t are ``ceil(concurrency(t) / slots)``. Think of
that step profile as stacked levels: level k is "on" while at least k pods are needed. Each level is
covered by pods that knew the future: one pays the startup once, runs while the level is on, and
across a gap either idles (costs the gap) or exits and starts again (costs the startup), whichever
is cheaper. So each level costs ``startup + on-time + sum(min(gap, startup))``.

No policy can hold zero wait for less; a policy can still come in under it by letting jobs queue,
which is why cost is always read together with SLO attainment.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Profile:
    """The zero-wait pod profile: ``pods[i]`` are needed on ``[times[i], times[i+1])``."""

    times: np.ndarray
    pods: np.ndarray


INSTANT_JOB_SECONDS = 1e-6
"""How long a job of length 0 holds its pod in the profile: it still needs one Ready at that moment.
Counted as length 0 it ended as it began and needed no pod at all, so a trace of such jobs had an
oracle of 0 pod-seconds and every cost ratio was NaN (written to ``--json -`` as bare ``NaN``)."""


def zero_wait_profile(arrivals: np.ndarray, service: np.ndarray, slots: int) -> Profile:
    """Pods needed over time if every job ran from its arrival (ends before starts at one instant)."""
    times = np.concatenate([arrivals + np.maximum(service, INSTANT_JOB_SECONDS), arrivals])
    deltas = np.concatenate([-np.ones(len(service), np.int64), np.ones(len(arrivals), np.int64)])
    order = np.argsort(times, kind="stable")  # ends were placed first, so they stay first on ties
    times, deltas = times[order], deltas[order]
    # Net change per distinct instant, so a slot handed from one job to the next is no gap.
    distinct = np.flatnonzero(np.concatenate([[True], np.diff(times) > 0]))
    net = np.add.reduceat(deltas, distinct)
    concurrency = np.cumsum(net)
    pods = -(-concurrency // slots)  # ceil for non-negative integers
    return Profile(times[distinct], pods)


def oracle_pod_seconds(arrivals: np.ndarray, service: np.ndarray, slots: int, startup: float) -> float:
    """Pod-seconds of the zero-wait clairvoyant oracle (see module docstring)."""
    profile = zero_wait_profile(arrivals, service, slots)
    before = np.concatenate([[0], profile.pods[:-1]])
    after = profile.pods
    change = after - before
    # Expand every step of the profile into unit level switches: levels before+1..after turn on
    # (or after+1..before turn off) at that instant.
    steps = np.abs(change)
    at = np.repeat(profile.times, steps)
    low = np.repeat(np.minimum(before, after), steps)
    first = np.repeat(np.cumsum(steps) - steps, steps)
    level = low + 1 + (np.arange(len(at)) - first)
    turning_on = np.repeat(change > 0, steps)
    # Per level, switches alternate on/off in time; group them by level, keeping time order.
    order = np.lexsort((at, level))
    at, level, turning_on = at[order], level[order], turning_on[order]
    ons, offs = at[turning_on], at[~turning_on]
    on_level = level[turning_on]
    busy = float(np.sum(offs - ons))
    # A gap is an off followed by an on of the same level; the first on of each level pays startup.
    same_level = on_level[1:] == on_level[:-1]
    gaps = ons[1:][same_level] - offs[:-1][same_level]
    starts = len(ons) - int(np.count_nonzero(same_level))
    return busy + startup * starts + float(np.sum(np.minimum(gaps, startup)))


def cheapest_schedule(arrivals: np.ndarray, service: np.ndarray, startup: float) -> float:
    """Pod-seconds of the cheapest schedule of real one-slot pods serving every job at its arrival.

    A check of :func:`oracle_pod_seconds`, whose level stacking is a reading of the definition and
    not a schedule: here each job runs on one pod from its arrival to its end. Every job costs its
    service; one that starts a pod pays the startup, one that follows another job on the same pod
    pays the idle gap instead when that is cheaper. Which job follows which is an assignment
    problem (at most one successor and one predecessor each), solved exactly over all pairs: an
    n-by-n matrix, so for traces of thousands of jobs, not millions (``benchmarks/oracle_matching.py``).
    """
    from scipy.optimize import linear_sum_assignment  # only this check needs it (0.3 s to import)

    gap = arrivals[None, :] - (arrivals[:, None] + service[:, None])  # job j's arrival after job i's end
    saving = np.where((gap >= 0) & (gap < startup), gap - startup, 0.0)
    del gap
    rows, cols = linear_sum_assignment(saving)
    return float(service.sum() + startup * len(arrivals) + saving[rows, cols].sum())


def warmup_bound(
    arrivals: np.ndarray,
    service: np.ndarray,
    *,
    slots: int,
    initial_pods: int,
    startup: float,
    look_seconds: float,
    slo: float,
    max_pods: int | None = None,
    tick_seconds: float | None = None,
    evidence_jobs: int = 1,
) -> float:
    """The best SLO attainment any online policy can reach on a trace that starts busy.

    Until the first pod ordered on evidence can be ready, only the initial pods serve. A policy
    learns of the first job at the first look at the queue at or after it arrives (see
    :func:`first_look`: ``look_seconds`` apart, the control tick or the watch's interval between
    ticks, restarting at every tick when ``tick_seconds`` is given), so
    no new pod serves before that instant plus one startup. Give the policy every pod it may have
    (``max_pods``, unlimited when None) from that instant on: jobs the pods cannot start in time
    are still late, FIFO, whatever the policy does. FIFO start times only move earlier when servers
    free up earlier, so no scaling schedule does better.

    ``evidence_jobs`` > 1 gives the pods at the first look after that many jobs instead: the bound
    of a policy that acts on a rate, not on the first job alone (see ``benchmarks/smooth_warmup.py``).
    """
    if len(arrivals) == 0:
        return 1.0
    seen = float(arrivals[min(evidence_jobs, len(arrivals)) - 1])
    first_ready = first_look(seen, look_seconds, tick_seconds) + startup
    later = len(arrivals) if max_pods is None else max(0, max_pods - initial_pods)
    # When each slot is next free, a min-heap: the initial ones now, the rest at first_ready.
    free = [0.0] * (initial_pods * slots) + [first_ready] * (later * slots)
    if not free:
        return 0.0
    met = 0
    latest_start = 0.0  # FIFO: nobody starts before the job ahead of it
    for arrival, work in zip(arrivals.tolist(), service.tolist(), strict=True):
        start = max(arrival, latest_start, free[0])
        heapq.heapreplace(free, start + work)
        latest_start = start
        met += start - arrival + work <= slo
    return met / len(arrivals)


def first_look(at: float, look_seconds: float, tick_seconds: float | None = None) -> float:
    """The first look at the queue at or after ``at``.

    Looks fall every ``look_seconds`` from 0; with ``tick_seconds``, at every tick from 0 and every
    ``look_seconds`` after each tick before the next, as the simulator's and the daemon's watch
    look. The two grids differ when the tick is no multiple of the watch: at a tick of 5 s and a
    watch of 2 s the looks are at 0, 2, 4, 5, 7, 9, 10, ..., and a job at 4.5 s is seen at 5 s, not 6 s.
    """
    tick = look_seconds if tick_seconds is None else tick_seconds
    start = math.floor(at / tick) * tick  # the tick at or before ``at``
    look = start + math.ceil((at - start) / look_seconds) * look_seconds
    return min(look, start + tick)
