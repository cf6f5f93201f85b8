"""Finds the period of traffic on a clock, so its season need not be configured.

Batch pipelines and cron jobs submit bursts every few minutes. Such a burst is over within one
warm-up, so only pods ordered before it serve it, and that takes knowing when it comes: the
seasonal profile does, once it has a season length. Operators rarely know the exact period of
every client, and a wrong one is worse than none, so the policy looks for it itself.

How: the per-tick arrival counts of the last few periods, their autocorrelation (numpy's FFT),
and the strongest peak at a lag between ``min_ticks`` and ``max_seconds`` that the
autocorrelation reaches from a dip below it. Trends (a ramp, a daily swing, one flash crowd)
decay without such a dip; Poisson noise and the Azure code trace's irregular bursts stay far
below the bar. So do smooth swings, by a second test: the busiest phase of the period must
carry ``peak_ratio`` times the mean rate, as a clock's bursts do; a sine is followed as well, and
more cheaply, without a season. A period needs ``cycles`` repetitions in the history before it
counts, and stays until its autocorrelation falls below ``off`` (the clock changed or stopped),
so the season does not flicker. Nor may a correlation be chance: noise correlates about
1/sqrt(pairs) at a lag with that many pairs of ticks, so a first finding must stand
``significance`` times that high, and the cycle must bring ``min_jobs_per_cycle`` jobs. A clock's
bursts pass both at once; sparse Poisson traffic (a job every 16-20 s) had correlated 0.5-0.6
by chance at a 1- or 1.5-minute lag over its first minutes, and a few jobs a cycle need no
pods warmed ahead of them anyway. The check runs every ``check_every_ticks`` on a bounded
history, so its cost per tick does not grow with uptime. Lags are counted in ticks (one minute at
the default five seconds), so a time-compressed run keeps the same shape.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from autoscaler.engine.state import RowSpec


class PeriodDetector:
    """Per-tick arrival counts and the period found in them (seconds), or None."""

    STATE: ClassVar[tuple[str, ...]] = ("_counts", "_last_check", "period", "checks")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"_counts": float}

    def __init__(
        self,
        tick_seconds: float,
        *,
        max_seconds: float = 3600.0,
        min_ticks: int = 12,
        cycles: int = 3,
        check_every_ticks: int = 12,
        on: float = 0.5,
        off: float = 0.3,
        dip: float = 0.4,
        peak_ratio: float = 3.0,
        significance: float = 4.0,
        min_jobs_per_cycle: float = 10.0,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.min_lag = max(2, min_ticks)
        self.max_lag = max(self.min_lag, math.floor(max_seconds / tick_seconds))
        self.cycles = cycles
        self.check_every_seconds = check_every_ticks * tick_seconds
        self.on, self.off, self.dip, self.peak_ratio = on, off, dip, peak_ratio
        self.significance, self.min_jobs_per_cycle = significance, min_jobs_per_cycle
        self._counts: deque[float] = deque(maxlen=(cycles + 1) * self.max_lag)
        self._last_check: float | None = None
        self.period: float | None = None
        self.checks = 0

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        """What a restored period must be to be held: a lag of 2 ticks or more, as one found is."""
        period = state.get("period")
        if period is not None and not 2 <= round(float(period) / self.tick_seconds) <= self.max_lag:
            return (
                f"period: {period!r} s is not a lag of 2 to {self.max_lag} ticks of {self.tick_seconds:g} s"
            )
        return None

    def history(self) -> list[float]:
        """The kept per-tick counts, oldest first (one per tick, the newest ending now)."""
        return list(self._counts)

    def observe(self, now: float, arrivals: float, interval: float) -> None:
        """Count one tick (rescaled to a nominal tick if its length differed); re-check when due."""
        if interval <= 0:
            return
        self._counts.append(arrivals * self.tick_seconds / interval)
        if self._last_check is None or now - self._last_check >= self.check_every_seconds:
            self._last_check = now
            self.checks += 1
            self.period = self._check()

    def _check(self) -> float | None:
        counts = np.fromiter(self._counts, float)
        correlation = autocorrelation(counts)
        if correlation is None:
            return None
        if self.period is not None:
            held = round(self.period / self.tick_seconds)
            if self._still_repeats(counts, held):
                # More cycles pin it down better: a tick's error would shift every phase.
                return sharpen(correlation, held) * self.tick_seconds
        longest = min(self.max_lag, len(counts) // self.cycles)
        lag = strongest_peak(correlation, self.min_lag, longest, self.dip)
        if lag is None or correlation[lag] < max(self.on, self.significance / math.sqrt(len(counts) - lag)):
            return None
        lag = sharpen(correlation, lag)
        if counts.sum() * lag / len(counts) < self.min_jobs_per_cycle:
            return None  # a few jobs a cycle: chance lines them up, and no pod waits for them
        # Only a clock's bursts: a smooth swing is followed as well, and more cheaply, by the
        # steady-traffic line and the Holt filter, which a seasonal forecast switches off.
        whole = len(counts) // lag * lag
        folded = counts[len(counts) - whole :].reshape(-1, lag).mean(axis=0)
        if folded.max() < self.peak_ratio * counts.mean():
            return None
        # And only a clock still running: old bursts dominate a long history's variance.
        return lag * self.tick_seconds if self._still_repeats(counts, lag) else None

    def _still_repeats(self, counts: np.ndarray, lag: int) -> bool:
        """Whether the newest ``cycles`` + 1 periods of ``lag`` ticks still correlate at that lag."""
        recent = autocorrelation(counts[-(self.cycles + 1) * lag :])
        return recent is not None and lag < len(recent) and recent[lag] >= self.off


def autocorrelation(counts: np.ndarray) -> np.ndarray | None:
    """Autocorrelation of a series at every lag (1 at lag 0), or None if it is constant.

    Each lag's sum is averaged over the pairs it has (n - lag), not over n: the usual estimator
    shrinks with the lag and, on a few cycles of wide bursts, puts the peak a tick early.
    """
    centred = counts - counts.mean()
    n = len(centred)
    power = float(np.dot(centred, centred)) / n
    if power <= 0:
        return None
    spectrum = np.fft.rfft(centred, 2 * n)  # zero-padded: no wrap-around
    sums = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    return np.asarray(sums / np.arange(n, 0, -1) / power)


def strongest_peak(correlation: np.ndarray, lo: int, hi: int, dip: float) -> int | None:
    """The lag in [lo, hi] of the highest local maximum that stands ``dip`` above an earlier lag."""
    if hi < lo or hi + 1 >= len(correlation):
        return None
    lowest = np.minimum.accumulate(correlation[: hi + 2])
    best: int | None = None
    for lag in range(lo, hi + 1):
        here = correlation[lag]
        peak = here >= correlation[lag - 1] and here >= correlation[lag + 1]
        if peak and here - lowest[lag] >= dip and (best is None or here > correlation[best]):
            best = lag
    return best


def sharpen(correlation: np.ndarray, lag: int) -> int:
    """The lag near ``lag`` whose multiples line up best, for the period to the tick.

    A wide burst's peak is flat on top, and noise picks a tick beside the true period; its
    multiples are not flat (an error of one tick is m ticks at the m-th), so the lag with the
    highest mean correlation over its multiples up to half the history is the period.
    """
    usable = len(correlation) // 2
    slack = max(1, lag // 10)

    def harmonics(candidate: int) -> float:
        multiples = range(candidate, max(candidate, usable) + 1, candidate)
        return float(np.mean([correlation[m] for m in multiples]))

    candidates = range(max(2, lag - slack), min(len(correlation) - 1, lag + slack) + 1)
    return max(candidates, key=lambda c: (harmonics(c), -abs(c - lag)))
