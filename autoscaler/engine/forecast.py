"""Forecast of the arrival rate over the horizon in which newly ordered pods become ready.

Two layers:

* an online damped Holt filter (level + trend) on the per-tick arrival rate, updated in O(1) per
  tick, with an exponentially weighted residual variance for the upper quantile;
* once two full seasons of history exist, an additive seasonal profile fitted by statsmodels'
  Holt-Winters on a bounded, bucketed history. The Holt filter then runs on the deseasonalised
  rate. Refits happen every ``refit_every_seconds`` on at most three seasons of buckets, so the
  per-tick cost never grows with how long the daemon has run.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np

# Enough buckets per season to see a daily shape, few enough for a refit to take well under a second.
MAX_BUCKETS_PER_SEASON = 288


@dataclass(frozen=True, slots=True)
class RateForecast:
    """Average arrival rate (jobs/s) expected over a horizon, and an upper quantile of it."""

    mean: float
    upper: float
    seasonal: bool = False


@dataclass(frozen=True, slots=True)
class HoltParams:
    """Smoothing constants of the online filter. ``phi`` < 1 damps the trend: bursts are not ramps."""

    alpha: float = 0.3
    beta: float = 0.05
    phi: float = 0.95
    variance_gain: float = 0.1


class SeasonalProfile:
    """Additive seasonal offsets (jobs/s) by phase of the season, refitted from bucketed history."""

    def __init__(self, season_seconds: float, tick_seconds: float, refit_every_seconds: float) -> None:
        self.bucket_seconds = max(tick_seconds, season_seconds / MAX_BUCKETS_PER_SEASON)
        self.periods = max(2, round(season_seconds / self.bucket_seconds))
        self.season_seconds = self.periods * self.bucket_seconds
        self.refit_every_seconds = refit_every_seconds
        self._buckets: deque[float] = deque(maxlen=3 * self.periods)
        self._bucket_index: int | None = None
        self._bucket_arrivals = 0.0
        self._bucket_covered = 0.0
        self._offsets: np.ndarray | None = None
        self._first_bucket_index = 0
        self._last_fit: float | None = None
        self.fits = 0

    @property
    def ready(self) -> bool:
        return self._offsets is not None

    def observe(self, now: float, arrivals: float, interval: float) -> None:
        index = math.floor(now / self.bucket_seconds)
        if self._bucket_index is None:
            self._bucket_index = index
        while index > self._bucket_index:  # close finished buckets (empty ones count as zero load)
            covered = self._bucket_covered
            self._buckets.append(self._bucket_arrivals / covered if covered > 0 else 0.0)
            self._bucket_index += 1
            self._bucket_arrivals = 0.0
            self._bucket_covered = 0.0
        self._bucket_arrivals += arrivals
        self._bucket_covered += interval
        due = self._last_fit is None or now - self._last_fit >= self.refit_every_seconds
        if due and len(self._buckets) >= 2 * self.periods:
            self._refit()
            self._last_fit = now

    def _refit(self) -> None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        history = np.fromiter(self._buckets, float)
        model = ExponentialSmoothing(
            history,
            trend="add",
            damped_trend=True,
            seasonal="add",
            seasonal_periods=self.periods,
            initialization_method="heuristic",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(optimized=True)
        season = np.asarray(fit.season, dtype=float)[-self.periods :]
        assert self._bucket_index is not None
        # season[i] belongs to bucket index (end - periods + i); store offsets by absolute phase.
        start = self._bucket_index - self.periods
        self._offsets = np.roll(season - season.mean(), start % self.periods)
        self.fits += 1

    def offset(self, at: float) -> float:
        if self._offsets is None:
            return 0.0
        return float(self._offsets[math.floor(at / self.bucket_seconds) % self.periods])

    def mean_offset(self, start: float, end: float) -> float:
        """Average offset over [start, end), sampled per bucket."""
        if self._offsets is None or end <= start:
            return self.offset(start)
        steps = max(1, math.ceil((end - start) / self.bucket_seconds))
        return sum(self.offset(start + i * (end - start) / steps) for i in range(steps)) / steps


class RateForecaster:
    """Online arrival-rate forecaster; see the module docstring for the model."""

    def __init__(
        self,
        tick_seconds: float,
        params: HoltParams | None = None,
        season_seconds: float | None = None,
        refit_every_seconds: float | None = None,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.params = params or HoltParams()
        self.level: float | None = None
        self.trend = 0.0
        self.variance = 0.0
        self.seasonal: SeasonalProfile | None = None
        if season_seconds:
            refit = refit_every_seconds or season_seconds / 24
            self.seasonal = SeasonalProfile(season_seconds, tick_seconds, refit)

    def observe(self, now: float, arrivals: int, interval: float) -> None:
        """Fold in one tick: ``arrivals`` jobs in the ``interval`` seconds before ``now``."""
        if interval <= 0:
            return
        if self.seasonal is not None:
            self.seasonal.observe(now, arrivals, interval)
            rate = arrivals / interval - self.seasonal.offset(now - interval / 2)
        else:
            rate = arrivals / interval
        p = self.params
        if self.level is None:
            self.level = rate
            return
        predicted = self.level + p.phi * self.trend
        error = rate - predicted
        self.level = predicted + p.alpha * error
        self.trend = p.phi * self.trend + p.alpha * p.beta * error
        self.variance += p.variance_gain * (error * error - self.variance)

    def forecast(self, now: float, horizon_seconds: float, z: float) -> RateForecast:
        """Average rate over (now, now + horizon] and its upper quantile at ``z`` standard errors."""
        if self.level is None:
            return RateForecast(0.0, 0.0)
        p = self.params
        steps = max(1, math.ceil(horizon_seconds / self.tick_seconds))
        # Mean over h = 1..steps of the damped-trend forecast level + trend * sum_{i<=h} phi^i.
        cumulative = 0.0
        damp = 0.0
        power = 1.0
        for _ in range(steps):
            power *= p.phi
            damp += power
            cumulative += damp
        mean = self.level + self.trend * cumulative / steps
        seasonal = self.seasonal is not None and self.seasonal.ready
        if self.seasonal is not None:
            mean += self.seasonal.mean_offset(now, now + horizon_seconds)
        # The queueing model already prices Poisson arrival noise, so only the variability beyond
        # it counts here: residual variance in excess of a Poisson process at this level (bursts,
        # regime changes), spread along the horizon, plus the filter's own error in the level.
        poisson = max(mean, 0.0) / self.tick_seconds
        excess = max(0.0, self.variance - poisson)
        level_error = poisson * p.alpha / (2.0 - p.alpha)
        spread = math.sqrt(excess * (1.0 / steps + p.alpha**2 * (steps - 1) / 2) + level_error)
        return RateForecast(mean=mean, upper=mean + z * spread, seasonal=seasonal)
