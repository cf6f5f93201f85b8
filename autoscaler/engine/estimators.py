"""Online estimators of the three quantities the policy sizes with.

Each one is O(1) or O(window) per tick with a bounded window, so a daemon that runs for months
costs the same per tick as one that just started. Until enough live samples exist, the operator's
configured default stands in: a fresh daemon must not guess from two data points.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from autoscaler.engine.snapshot import MAX_CLOCK_SECONDS
from autoscaler.engine.state import RowSpec

CAPPED_SHARE = 0.01
"""The slowest ``CAPPED_SHARE`` of the samples (at least one) are the candidates for capping."""
OUTLIER_FACTOR = 20.0
OUTLIER_FLOOR_SECONDS = 1.0
"""A candidate is capped only beyond ``OUTLIER_FACTOR`` times the slowest of the rest (or of
``OUTLIER_FLOOR_SECONDS``, if that is more): see :func:`winsorised`."""


def winsorised(samples: Sequence[float]) -> np.ndarray:
    """The samples, with each of the slowest ``CAPPED_SHARE`` (at least one) that lies beyond
    ``OUTLIER_FACTOR`` times the slowest of the rest counted as that one: a pathological duration
    among the first few (a creation time read as the epoch, 1.7e9 s; a hung job) cannot set a
    statistic alone.

    Only such outliers are touched. A cap at 20 medians cut a slow mode that is common (60 % of
    jobs at 0.2 s and 40 % at 12 s: the mean read 1.72 s of 4.92, and the pool was sized for a
    third of the load), and a median of 0 s (warm-ups of pods whose image was cached) capped every
    startup to 0. Capping the slowest sample whatever its size biased few samples low (warm-ups
    of 30, 60 and 90 s had a p90 of 60 s).
    """
    values = np.sort(np.fromiter(samples, float))
    slowest = max(1, math.ceil(CAPPED_SHARE * len(values)))
    if len(values) > slowest:
        rest = float(values[-slowest - 1])
        tail = values[-slowest:]
        with np.errstate(over="ignore"):
            limit = OUTLIER_FACTOR * max(rest, OUTLIER_FLOOR_SECONDS)
        values[-slowest:] = np.where(tail > limit, rest, tail)
    return values


class WindowedRate:
    """Arrival rate over a sliding time window, from per-tick (arrivals, interval) counts.

    Keeps the ticks and running totals, so reading the rate is O(1); the forecaster's steady line
    reads the same ticks for its fit and drops the older ones at a level shift.
    """

    STATE: ClassVar[tuple[str, ...]] = ("ticks", "_arrivals", "_covered")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"ticks": (float, float, float)}

    def __init__(self, window_seconds: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        self.window_seconds = window_seconds
        self.ticks: deque[tuple[float, float, float]] = deque()
        """(end time, arrivals, interval) of each tick in the window, oldest first."""
        self._arrivals = 0.0
        self._covered = 0.0

    def observe(self, now: float, arrivals: float, interval: float) -> None:
        self.ticks.append((now, arrivals, interval))
        self._arrivals += arrivals
        self._covered += interval
        self.forget_through(now - self.window_seconds)

    def forget_through(self, until: float) -> None:
        """Drop the ticks that ended at or before ``until``."""
        while self.ticks and self.ticks[0][0] <= until:
            _, old_arrivals, old_interval = self.ticks.popleft()
            self._arrivals -= old_arrivals
            self._covered -= old_interval

    @property
    def arrivals(self) -> float:
        """Jobs counted in the window."""
        return self._arrivals

    @property
    def covered_seconds(self) -> float:
        """Seconds of observations the window holds (less than the window early on)."""
        return self._covered

    @property
    def rate(self) -> float:
        """Jobs per second over the window (0 before any observation)."""
        return self._arrivals / self._covered if self._covered > 1e-9 else 0.0


class SampleQuantiles:
    """Robust statistics of the most recent ``capacity`` samples, or a default until ``min_samples``.

    Service times are summarised by a capped mean (:meth:`capped_mean`: the load a job brings,
    without letting one pathological job dominate); startup times by a high quantile (the
    warm-up we must plan for).
    """

    STATE: ClassVar[tuple[str, ...]] = ("_samples",)
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"_samples": float}

    def __init__(self, default: float, min_samples: int, capacity: int = 512) -> None:
        self.default = default
        self.min_samples = min_samples
        self._samples: deque[float] = deque(maxlen=capacity)
        self._cache: dict[str, float] = {}

    def extend(self, samples: tuple[float, ...]) -> None:
        # Dropped: NaN, negative, infinite and beyond any clock's reading (1e308 s of service
        # written by other software, a startup of 1e300 s); kept, and capped later: long ones that
        # a clock can measure (a warm-up timed from a creation time of 0, 1.7e9 s). One of 1e308
        # made the horizon infinite and the forecast NaN, and every tick raised.
        valid = [s for s in samples if 0 <= s <= MAX_CLOCK_SECONDS]  # NaN fails both comparisons
        if valid:
            self._samples.extend(valid)
            self._cache.clear()

    def after_restore(self) -> None:
        self._cache.clear()

    @property
    def count(self) -> int:
        return len(self._samples)

    @property
    def measured(self) -> bool:
        return len(self._samples) >= self.min_samples

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of recent samples, outliers among the slowest 1 % capped
        (:func:`winsorised`); the default while too few exist.

        The winsorising keeps one pathological sample among the first few from setting the
        quantile: a pod that waited an hour for a node, or a creation time read as the epoch
        (1.7e9 s), was the startup p90 of ten samples (linear interpolation reaches the largest),
        and the policy planned every horizon that long and ordered the maximum pool each tick.
        """
        if not self.measured:
            return self.default
        key = f"q{q}"
        if key not in self._cache:
            self._cache[key] = float(np.quantile(winsorised(self._samples), q))
        return self._cache[key]

    def cv2(self, default: float = 1.0) -> float:
        """Squared coefficient of variation of the capped samples (``default`` until measured).

        The same capped samples as :meth:`capped_mean`, so one duration of 1e300 s (written by
        other software) can neither make it NaN nor size the queueing model for the maximum.
        """
        if not self.measured:
            return default
        cv2 = self._capped_moments()[1]
        return default if math.isnan(cv2) else cv2

    def capped_mean(self) -> float:
        """Mean of the samples with outliers among the slowest 1 % capped, or the default.

        A job's service time is the load it brings, so the slow tail counts: a 10 % trimmed mean
        dropped it, and on lognormal service times (mean 5 s, p90 10 s) it read 4.2 s, so the pool
        was sized for a sixth less work than came (SLO attainment 78 % where 88 % was possible).
        The cap only keeps rare pathological durations (a hung job, a clock step, 1e12 s from
        other software) from sizing the pool: those among the slowest 1 % beyond 20 times the
        slowest of the rest count as that one (:func:`winsorised`).
        """
        if not self.measured:
            return self.default
        return self._capped_moments()[0]

    def _capped_moments(self) -> tuple[float, float]:
        """(mean, squared coefficient of variation or NaN) of the capped samples, cached."""
        if "mean" not in self._cache:
            capped = winsorised(self._samples)
            with np.errstate(over="ignore", invalid="ignore"):
                mean = float(capped.mean())
                self._cache["cv2"] = float(capped.var() / (mean * mean)) if mean > 0 else math.nan
            self._cache["mean"] = mean
        return self._cache["mean"], self._cache["cv2"]


class BurstPersistence:
    """How much of a projected excess rate really lasts over the next horizon (0..1).

    The policy keeps two: one for the short-window rate of a detected burst (the backlog
    projection), one for the forecast's excess over the long-run rate (the SLO term).

    When the short-window rate jumps above the forecast, the policy projects that excess over a
    whole warm-up. A flash crowd keeps it up; a spiky real trace (hundreds of jobs in ten seconds
    after idle minutes) often does not, and pods ordered for it come up to an empty queue. This
    scores every such projection once its horizon has passed (arrivals beyond the forecast that
    really came, over the excess that was projected) and keeps a recency-weighted ratio. It starts
    at 1 (trust the burst), so the first flash crowd is met in full.
    """

    STATE: ClassVar[tuple[str, ...]] = ("_pending", "_projected", "_realised")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"_pending": (float, float, float, float)}

    def __init__(self, memory: float = 0.95) -> None:
        self.memory = memory
        self._pending: deque[list[float]] = deque()  # [due, projected_excess, baseline, arrived]
        self._projected = 0.0
        self._realised = 0.0

    def observe(self, now: float, arrivals: int) -> None:
        """Count this tick's arrivals into the open projections; score those now due."""
        for entry in self._pending:
            entry[3] += arrivals
        while self._pending and self._pending[0][0] <= now + 1e-9:
            _, projected, baseline, arrived = self._pending.popleft()
            realised = min(max(arrived - baseline, 0.0), projected)
            if self._projected == 0.0:  # the prior: one projection that came true
                self._projected = self._realised = projected
            self._projected = self.memory * self._projected + projected
            self._realised = self.memory * self._realised + realised

    def project(self, now: float, horizon: float, rate_now: float, baseline_rate: float) -> None:
        """Remember that ``rate_now`` was projected over ``horizon`` against ``baseline_rate``."""
        if rate_now > baseline_rate and horizon > 0:
            excess = (rate_now - baseline_rate) * horizon
            self._pending.append([now + horizon, excess, baseline_rate * horizon, 0.0])

    @property
    def ratio(self) -> float:
        return self._realised / self._projected if self._projected > 0 else 1.0
