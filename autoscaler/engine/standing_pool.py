"""Learned standing pool: the smallest fixed pool that would have met the SLO on recent traffic.

Capacity ordered when a burst starts arrives one warm-up too late for the burst's first jobs.
On bursty traffic (idle minutes, then hundreds of jobs in seconds) the only thing that serves
those jobs is capacity already warm, and the right amount of it is an empirical question. This
module answers it from the arrivals of the last ``window_seconds``: it replays them through a
fluid FIFO queue with ``n`` pods and finds the smallest ``n`` whose SLO attainment reaches the
target. On smooth traffic that answer sits below what the queueing model asks for and costs
nothing; after a long quiet spell it falls to zero by itself.

The replay is O(window / tick) per candidate size, binary-searched, and refreshed every
``refresh_seconds``, so its cost per tick is bounded whatever the history.

The window judges each tick against what reactive scaling provided *then*. When the forecaster
changes under it (a season found in the arrivals, a seasonal profile fitted for the first time),
reactive scaling becomes a different thing, and bursts it used to miss it now orders for a
warm-up ahead; yet the window would keep the pool those old misses asked for until they age out,
an hour of warm pods that nothing needs. :meth:`StandingPool.prove` lets the new forecaster show
it: once it has served one whole season with no job late on reactive capacity alone, the history
from before it is dropped. A season that does not serve the bursts never passes, and changes nothing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import ClassVar

import numpy as np

from autoscaler.engine.state import RowSpec


def fluid_attainment(
    ticks: Sequence[tuple[float, float, float]], pods: int, slots: int, service: float, max_wait: float
) -> float:
    """Share of jobs in ``ticks`` that wait at most ``max_wait`` with a floor of ``pods``.

    Each tick is (arrivals, interval, pods the reactive policy had ready then). Jobs arrive
    uniformly within a tick; ``max(pods, reactive) * slots`` servers drain the FIFO queue. A job's
    wait is the queue ahead of it divided by the service rate, which is linear in its arrival time
    within the tick, so the share meeting the bound is exact for the fluid model.
    """
    return FluidWindow(ticks).attainment(pods, slots, service, max_wait)


class FluidWindow:
    """Ticks of a window as columns, for :meth:`attainment` at many pool sizes.

    The standing pool asks for the attainment of several sizes per refresh, over an hour of ticks;
    a Python loop per tick was the largest part of the policy's time on long replays. Columns and
    the queue's Lindley recursion in closed form (a running minimum of cumulative sums) make each
    question a few array operations.
    """

    def __init__(self, ticks: Sequence[tuple[float, float, float]] | np.ndarray) -> None:
        columns = np.asarray(ticks, dtype=np.float64).reshape(-1, 3)
        self.counts, self.intervals, self.reactive = columns[:, 0], columns[:, 1], columns[:, 2]
        self.total = float(self.counts.sum())

    def attainment(self, pods: int, slots: int, service: float, max_wait: float) -> float:
        """Share of the window's jobs that wait at most ``max_wait`` with a floor of ``pods``."""
        if self.total <= 0:
            return 1.0
        counts = self.counts
        # Ignored: a corrupt restored window (1e308 jobs a tick) overflows; it is then judged by
        # what the arithmetic gives, as the tick-by-tick loop did.
        with np.errstate(all="ignore"):
            servers = np.maximum(self.reactive, pods) * slots
            rate = servers / service
            # Jobs that may be ahead of one and still meet the bound: as many as the servers start
            # within it, and never fewer than the other servers, since a job that finds a free
            # slot waits for nothing. The fluid count alone missed that wherever a job is long
            # against the wait budget (60 s jobs, 1 s to spare: a lone arrival in a tick "needed"
            # 12 pods, and steady 0.05 jobs/s kept a pool of 10-20 for a load of 3).
            budget = np.maximum(max_wait * rate, servers - 1.0)
            growth = counts - rate * self.intervals  # the queue's change over the tick, unfloored
            # Lindley: queue_k = max(0, queue_{k-1} + growth_k) is the cumulative sum less its
            # running minimum (floored at 0); the queue a tick starts with is the previous tick's end.
            total = np.cumsum(growth)
            after = total - np.minimum.accumulate(np.minimum(total, 0.0))
            queue = np.concatenate(([0.0], after[:-1]))
            end = queue + growth  # the queue the tick's last job meets
            # The queue seen at fraction u of the tick is queue + u * growth: the share of the
            # tick's jobs under the budget is 1, 0, or where that line crosses it.
            crossing = np.where(
                queue <= budget,
                np.where(end <= budget, 1.0, (budget - queue) / growth),
                np.where(end <= budget, 1.0 - (queue - budget) / -growth, 0.0),
            )
            served = (counts > 0) & (rate > 0)
            return float(np.sum(counts * crossing, where=served)) / self.total


def smallest_enough(enough: Callable[[int], bool], limit: int, guess: int) -> int:
    """The smallest ``n`` in [0, ``limit``] with ``enough(n)`` (``limit`` if none), for a monotone test.

    Each test replays the whole window, so the search is ordered by what is likely: no pool at all
    (smooth traffic, the common case: one replay), then the last answer, from which it gallops
    outwards and bisects. A refresh that leaves the pool where it was costs three replays instead of
    a bisection's eight over 0..200; on a million-job replay the bisection was the largest part of
    the policy's time. Any order finds the same ``n`` for a monotone test.
    """
    if enough(0):
        return 0
    lo, hi = 1, limit  # enough(lo - 1) is false; enough(hi) is assumed until tested
    guess = min(max(guess, lo), hi)
    step = 1
    if enough(guess):
        hi = guess
        while hi - step >= lo and enough(hi - step):  # gallop down
            hi -= step
            step *= 2
        lo = max(lo, hi - step + 1)
    else:
        lo = guess + 1
        while lo + step - 1 < hi and not enough(lo + step - 1):  # gallop up
            lo += step
            step *= 2
        hi = min(hi, lo + step - 1)
        if hi == limit and lo <= hi and not enough(hi):
            return limit
    while lo < hi:  # invariant: enough(lo - 1) is false, enough(hi) is true
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


class StandingPool:
    """Keeps recent per-tick arrivals and the learned pool size derived from them."""

    STATE: ClassVar[tuple[str, ...]] = (
        "_ticks",
        "_last_refresh",
        "pods",
        "refreshes",
        "_probation_start",
        "_probation_length",
    )
    STATE_ADDED: ClassVar[tuple[str, ...]] = ("_probation_start", "_probation_length")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"_ticks": (float, float, float, float)}

    def __init__(self, window_seconds: float, target: float, refresh_seconds: float = 30.0) -> None:
        self.window_seconds = window_seconds
        self.refresh_seconds = refresh_seconds
        self.target = target
        self._ticks: deque[tuple[float, float, float, float]] = deque()
        self._columns = _Columns()
        self._last_refresh: float | None = None
        self.pods = 0
        self.refreshes = 0
        # The span a new forecaster is on probation for (see prove): from start, length long.
        self._probation_start: float | None = None
        self._probation_length = 0.0

    def prove(self, start: float, length: float) -> None:
        """Put a new forecaster on probation from ``start``, one ``length`` (a season) at a time.

        At the end of each span :meth:`size` checks it: if reactive scaling alone met every job
        in it, the ticks before ``start`` no longer describe the system and are forgotten; if not,
        the next span is checked, until one passes, :meth:`prove` is called again, or
        :meth:`cancel_probation` ends it.
        """
        if length <= 0:
            raise ValueError("a probation span must be longer than 0 s")
        self._probation_start, self._probation_length = start, length

    def after_restore(self) -> None:
        self._columns = _Columns()  # the restored ticks are not those the columns were copied from

    def cancel_probation(self) -> None:
        """The forecaster on probation is gone (its season lost): nothing is left to prove."""
        self._probation_start = None

    def observe(self, now: float, arrivals: int, interval: float, reactive_pods: int) -> None:
        """Record one tick: its arrivals and the ready pods reactive scaling alone provided."""
        self._ticks.append((now, float(arrivals), interval, float(reactive_pods)))
        self._columns.appended += 1
        while self._ticks and self._ticks[0][0] <= now - self.window_seconds:
            self._ticks.popleft()

    def size(self, now: float, slots: int, service: float, max_wait: float, limit: int) -> int:
        """Recompute the pool size when due; return the current learned size."""
        self._end_probation(now, slots, service, max_wait)
        if self._last_refresh is not None and now - self._last_refresh < self.refresh_seconds:
            return self.pods
        self._last_refresh = now
        self.refreshes += 1
        history = FluidWindow(self._columns.of(self._ticks)[:, 1:])

        def enough(pods: int) -> bool:
            return history.attainment(pods, slots, service, max_wait) >= self.target

        self.pods = smallest_enough(enough, limit, self.pods)
        return self.pods

    def _end_probation(self, now: float, slots: int, service: float, max_wait: float) -> None:
        """Judge every span of the probation that has ended by ``now`` (see :meth:`prove`)."""
        length = self._probation_length
        while self._probation_start is not None and now >= self._probation_start + length:
            start = self._probation_start
            # Spans before the first tick since ``start`` hold no jobs and prove nothing: skipped at
            # once, since after a long gap (a restart from an old document, a clock step) checking
            # them one season at a time took hours of seasons.
            first = next((t for t, _, _, _ in self._ticks if t >= start), now)
            empty = math.floor((first - start) / length)
            if empty > 0:
                self._probation_start = start + empty * length
                continue
            span = [(a, i, r) for t, a, i, r in self._ticks if start <= t < start + length]
            served = sum(a for a, _, _ in span) > 0  # a season without jobs proves nothing
            if not served or fluid_attainment(span, 0, slots, service, max_wait) < 1.0:
                self._probation_start = start + length
                continue
            while self._ticks and self._ticks[0][0] < start:
                self._ticks.popleft()
            self._probation_start = None
            self._last_refresh = None  # the pool the remaining history asks for, at once


class _Columns:
    """The standing pool's ticks as an array, copied one new tick at a time.

    Converting the whole hour of tuples at every refresh cost more than the fluid replays it fed.
    Ticks only join the deque at the right (:meth:`StandingPool.observe`, which counts them in
    ``appended``) and leave at the left, so the columns of the last copy stay valid: drop as many
    rows from the front as have left, and append the ticks that are new.
    """

    def __init__(self) -> None:
        self.appended = 0
        self._rows = np.empty((0, 4))
        self._through = 0  # ``appended`` when the rows were last brought up to date

    def of(self, ticks: deque[tuple[float, float, float, float]]) -> np.ndarray:
        """``ticks`` as an array of shape (len(ticks), 4), in the same order."""
        new = self.appended - self._through
        kept = len(ticks) - new
        if new < 0 or kept < 0 or kept > len(self._rows):
            kept, new = 0, len(ticks)  # not the deque this counted: copy it all
        tail = np.asarray(list(islice(ticks, kept, None)), dtype=np.float64).reshape(-1, 4)
        self._rows = np.concatenate((self._rows[len(self._rows) - kept :], tail))
        self._through = self.appended
        return self._rows
