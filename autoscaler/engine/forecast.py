"""Forecast of the arrival rate over the horizon in which newly ordered pods become ready.

Three layers:

* an online damped Holt filter (level + trend) on the per-tick arrival rate, updated in O(1) per
  tick, with an exponentially weighted residual variance for the upper quantile;
* a steady-traffic line (:class:`SteadyRate`): least squares through the last minutes without a
  level shift. It replaces the Holt level whenever the two agree within noise, which is most of
  the time on steady or slowly moving traffic, and is about three times less noisy;
* once two full seasons of history exist, an additive seasonal profile fitted by statsmodels'
  Holt-Winters on a bounded, bucketed history. The Holt filter then runs on the deseasonalised
  rate. Refits happen every ``refit_every_seconds`` on at most three seasons of buckets, so the
  per-tick cost never grows with how long the daemon has run.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autoscaler.engine.estimators import WindowedRate
from autoscaler.engine.state import RowSpec

# Enough buckets per season to see a daily shape, few enough for a refit to take well under a second.
MAX_BUCKETS_PER_SEASON = 288
MIN_TICKS_PER_SEASON = 5
"""A season of fewer ticks never gets a profile: three seasons of buckets are kept, and
statsmodels' heuristic start needs a season plus ten (3p >= p + 10 only from p = 5)."""
# The steady-traffic line stands in for the Holt level when the two differ by at most this many
# standard errors of their difference (Poisson noise of each).
STEADY_AGREEMENT_Z = 3.0
STEADY_NOISE_RATIO = 2.0
"""How much noisier than the Holt level the steady line may be and still stand in for it.

The line exists to be the steadier reading. Its variance at the point read grows with the square
of how far ahead of its data that is, so a line through the minute after a cut, read half a
300 s warm-up ahead, was mostly its slope's noise (at 0.5 job/s one tick of five arrivals read
the rate as 0.92, and the pool went from 16 to 59 pods). The level's own variance leaves out its
trend's, so the line may be somewhat noisier and still the better forecast. Chosen on replays, not
derived: at 2 the ramp variants of ``benchmarks/robustness.py`` (where the line is cut again and
again) keep their scores within 0.5 points, where 1 lost up to 0.7; at 4 a 300 s warm-up on a
16-slot workload still sized on the slope noise (80 % within SLO against 89 % at 2)."""
# Sums over a horizon are looped up to this many steps (a horizon of about 14 h at 5 s ticks) and
# taken in closed form beyond: the horizon follows the measured startup, and one absurd sample (a
# pod whose creation time read as 0 measures a warm-up of 55 years) made a tick loop for minutes.
HORIZON_LOOP_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class RateForecast:
    """Average arrival rate (jobs/s) expected over a horizon, and an upper quantile of it.

    ``steady`` says the mean came from the steady-traffic line, not from the Holt filter.
    ``seasonal_offset`` is the part of the mean the seasonal profile adds (its average over the
    horizon) and ``seasonal_at_ready`` the profile's offset in the horizon's last tick, when pods
    ordered now first serve: a season's shape is known ahead, so a peak that begins there is sized
    for where it will be rather than averaged with the quiet before it. Both are 0 without one.
    """

    mean: float
    upper: float
    seasonal: bool = False
    steady: bool = False
    seasonal_offset: float = 0.0
    seasonal_at_ready: float = 0.0

    @property
    def mean_without_lift(self) -> float:
        """The mean less a seasonal lift: the part that may be a spike's echo (a dip stays in)."""
        return self.mean - max(0.0, self.seasonal_offset)


@dataclass(frozen=True, slots=True)
class HoltParams:
    """Smoothing constants of the online filter. ``phi`` < 1 damps the trend: bursts are not ramps.

    They are per tick of ``reference_seconds``, the default tick; see :meth:`for_interval` for
    shorter ticks. The reference is a duration like the workload's own, so a time-compressed run
    (the demo's, at 10x) compresses it too.
    """

    alpha: float = 0.3
    beta: float = 0.05
    phi: float = 0.95
    variance_gain: float = 0.1
    reference_seconds: float = 5.0

    def for_interval(self, seconds: float) -> HoltParams:
        """The constants for a control tick of ``seconds``: as many seconds' worth of memory.

        A count over a second is five times as noisy as one over five, and at the same
        per-update gains a 1 s tick made the level follow it: on steady Poisson traffic (5 jobs/s)
        the pool stood a quarter higher than at a 5 s tick (37 pods against 30) and cost 1.09x
        the oracle instead of 0.89x. Below the reference each gain is scaled so that ``k`` updates
        of ``seconds / k`` forget what one update of ``seconds`` does (``1 - (1 - g) ** k``), and
        the trend damps per second alike. Longer ticks keep the per-update constants: each of
        their counts already averages more, and holding the time constant there made the level
        follow single 15 s counts (the Azure code trace at a 15 s tick lost 1.5 points).
        """
        if seconds >= self.reference_seconds or seconds <= 0:
            return self
        k = seconds / self.reference_seconds
        return HoltParams(
            alpha=1.0 - (1.0 - self.alpha) ** k,
            beta=1.0 - (1.0 - self.beta) ** k,
            phi=self.phi**k,
            variance_gain=1.0 - (1.0 - self.variance_gain) ** k,
            reference_seconds=seconds,
        )


class SeasonalProfile:
    """Additive seasonal offsets (jobs/s) by phase of the season, refitted from bucketed history."""

    STATE: ClassVar[tuple[str, ...]] = (
        "_buckets",
        "_bucket_index",
        "_bucket_arrivals",
        "_bucket_covered",
        "_offsets",
        "_last_fit",
        "fits",
    )
    SHAPE: ClassVar[tuple[str, ...]] = ("periods", "bucket_seconds")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {"_buckets": float}

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
        self._last_fit: float | None = None
        self.fits = 0

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        """One offset per phase, and whole bucket numbers: the profile indexes with both."""
        offsets, index = state.get("_offsets"), state.get("_bucket_index")
        if offsets is not None and (not isinstance(offsets, np.ndarray) or len(offsets) != self.periods):
            return f"_offsets: expected an array of {self.periods} offsets"
        if index is not None and not isinstance(index, int):
            return f"_bucket_index: expected a whole number, got {index!r}"
        return None

    @property
    def ready(self) -> bool:
        return self._offsets is not None

    def observe(self, now: float, arrivals: float, interval: float, *, refit: bool = True) -> None:
        """Count a tick's ``arrivals`` (the ``interval`` seconds before ``now``) in its bucket.

        The tick belongs to the phase of its middle, as :meth:`offset` is read: stamped with its
        end, every count would land one tick late, and a short season's peak with it. Then refit
        when due, unless ``refit`` is false (history being replayed: one refit at its end does).
        """
        index = math.floor((now - interval / 2) / self.bucket_seconds)
        if self._bucket_index is None:
            self._bucket_index = index
        if index > self._bucket_index:  # close finished buckets (empty ones count as zero load)
            covered = self._bucket_covered
            self._buckets.append(self._bucket_arrivals / covered if covered > 0 else 0.0)
            # Only the last maxlen empty ones can stay: after a clock step of years, closing
            # every bucket in between one at a time took minutes.
            assert self._buckets.maxlen is not None
            self._buckets.extend([0.0] * min(int(index - self._bucket_index) - 1, self._buckets.maxlen))
            self._bucket_index = index
            self._bucket_arrivals = 0.0
            self._bucket_covered = 0.0
        self._bucket_arrivals += arrivals
        self._bucket_covered += interval
        if refit:
            self.refit_if_due(now)

    def refit_if_due(self, now: float) -> None:
        """Refit once two seasons are bucketed and ``refit_every_seconds`` have passed.

        statsmodels' heuristic start also needs a season plus ten buckets, which a season of
        fewer than ten buckets reaches later (and one of fewer than five never: three seasons are
        kept). A fit that fails all the same keeps the offsets it had until the next one is due:
        raised out of here, it failed every tick, since a failed fit was never marked done.
        """
        due = self._last_fit is None or now - self._last_fit >= self.refit_every_seconds
        if due and len(self._buckets) >= max(2 * self.periods, self.periods + 10):
            self._last_fit = now
            with contextlib.suppress(ValueError):  # numpy's LinAlgError is one too
                self._refit()

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
        if not np.all(np.isfinite(season)):
            raise ValueError("the seasonal fit is not finite")
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
        """Average offset over [start, end), sampled per bucket (at most ``HORIZON_LOOP_STEPS`` times)."""
        if self._offsets is None or end <= start:
            return self.offset(start)
        steps = min(max(1, math.ceil((end - start) / self.bucket_seconds)), HORIZON_LOOP_STEPS)
        return sum(self.offset(start + i * (end - start) / steps) for i in range(steps)) / steps


class SteadyRate:
    """The arrival rate as a least-squares line through the longest recent stretch without a shift.

    Why it exists: a Holt filter quick enough to follow a ramp also follows Poisson noise. At one
    job per second its level wanders about 20 % from tick to tick; sizing for those wiggles, then
    holding each peak through the scale-down window and paying a warm-up for every pod ordered on
    one, cost 5-10 % more pod-seconds than the right fixed pool on steady traffic while still
    missing more jobs than it. A line fitted to ``window_seconds`` of counts is about three times
    steadier and, being a line, follows a slow trend (a daily swing) without lagging behind it.

    It must not average across a change, so the window is cut at a level shift: when its newest
    5, 10, 20 or 40 % (30 s to 4 min of the default ten minutes) differ from the rest by more than
    ``cut_z`` Poisson standard errors, the older part is dropped. Until a tenth of the window is
    shift-free it offers nothing and the Holt filter stands alone. All of it scales with the
    window, so a time-compressed run keeps the same shape. Per-tick cost is O(window / tick).
    """

    RECENT_SHARES = (0.05, 0.1, 0.2, 0.4)
    STATE: ClassVar[tuple[str, ...]] = ("_window",)

    def __init__(self, window_seconds: float, cut_z: float = 3.0) -> None:
        self.window_seconds = window_seconds
        self.splits = tuple(share * window_seconds for share in self.RECENT_SHARES)
        self.min_seconds = 0.1 * window_seconds
        self.cut_z = cut_z
        self._window = WindowedRate(window_seconds)

    @property
    def covered(self) -> float:
        """Seconds of shift-free history the line is fitted to."""
        return self._window.covered_seconds

    def observe(self, now: float, arrivals: float, interval: float) -> None:
        if interval <= 0:
            return
        self._window.observe(now, arrivals, interval)
        self._cut_at_shift(now)

    def _cut_at_shift(self, now: float) -> None:
        total_arrivals, total_covered = self._window.arrivals, self._window.covered_seconds
        pooled = max(total_arrivals / total_covered, 1e-9) if total_covered > 0 else 0.0
        recent_arrivals = recent_covered = 0.0
        splits = iter(self.splits)
        split = next(splits)
        for end, arrivals, interval in reversed(self._window.ticks):  # one pass, newest first
            while end <= now - split:  # this tick and all before it are "older" for this split
                older_covered = total_covered - recent_covered
                if older_covered >= self.splits[0] and recent_covered > 0:
                    older_rate = (total_arrivals - recent_arrivals) / older_covered
                    noise = math.sqrt(pooled * (1.0 / older_covered + 1.0 / recent_covered))
                    if abs(recent_arrivals / recent_covered - older_rate) > self.cut_z * noise:
                        self._window.forget_through(now - split)
                        return
                next_split = next(splits, None)
                if next_split is None:
                    return
                split = next_split
            recent_arrivals += arrivals
            recent_covered += interval

    def line(self, at: float) -> tuple[float, float] | None:
        """The fitted rate at time ``at`` and its Poisson variance, or None while history is short.

        Weighted least squares of per-tick rates on tick mid-times, weighted by tick length (a
        tick's rate has variance rate / length); the variance is that of the fitted value at ``at``.
        """
        ticks, covered = self._window.ticks, self._window.covered_seconds
        if covered < self.min_seconds or len(ticks) < 3:
            return None
        mean_rate = self._window.arrivals / covered
        # Two plain passes over the ticks (every decision, a 10-minute window): the tick's mid-time
        # relative to ``at`` is t - i / 2 - at; its length-weighted mean, then the spread around it
        # and the arrivals' lean along it.
        weighted = 0.0
        for t, _, i in ticks:
            weighted += (t - i / 2 - at) * i
        t_bar = weighted / covered
        spread = lean = 0.0
        for t, a, i in ticks:
            offset = t - i / 2 - at - t_bar
            spread += i * offset**2
            lean += offset * a
        slope = lean / spread if spread > 0 else 0.0
        rate = mean_rate - slope * t_bar  # the line at relative time 0, i.e. at ``at``
        poisson = max(mean_rate, 1e-9)
        variance = poisson / covered + (poisson / spread * t_bar * t_bar if spread > 0 else 0.0)
        return max(rate, 0.0), variance


class RateForecaster:
    """Online arrival-rate forecaster; see the module docstring for the model."""

    STATE: ClassVar[tuple[str, ...]] = ("level", "trend", "variance", "steady", "seasonal")

    def __init__(
        self,
        tick_seconds: float,
        params: HoltParams | None = None,
        season_seconds: float | None = None,
        refit_every_seconds: float | None = None,
        steady_window_seconds: float = 600.0,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.params = params or HoltParams()
        # Per the configured tick, not each update's interval: the watch's copy of the policy
        # observes a second or two of a burst as a tick, and must react to it as to one.
        self._per_tick = self.params.for_interval(tick_seconds)
        self.level: float | None = None
        self.trend = 0.0
        self.variance = 0.0
        self.steady = SteadyRate(steady_window_seconds) if steady_window_seconds > 0 else None
        self.refit_every_seconds = refit_every_seconds
        self.seasonal: SeasonalProfile | None = None
        self.set_season(season_seconds)

    def set_season(self, season_seconds: float | None, now: float = 0.0, past: Sequence[float] = ()) -> None:
        """Use a seasonal profile of this length from now on (None: none), fed ``past`` first.

        ``past`` are per-tick arrival counts, oldest first, the newest for the tick ending at
        ``now``; with two seasons of them the profile is fitted at once. The Holt level is left
        as it is: it follows the deseasonalised rate within a few ticks.
        """
        if not season_seconds:
            self.seasonal = None
            return
        # A day's profile is refitted hourly; a short season's not more often than every minute
        # (twelve ticks): the fit costs tens of milliseconds, and a cron's shape hardly moves.
        refit = self.refit_every_seconds or max(season_seconds / 24, 12 * self.tick_seconds)
        self.seasonal = SeasonalProfile(season_seconds, self.tick_seconds, refit)
        tick = self.tick_seconds
        for i, count in enumerate(past):
            self.seasonal.observe(now - (len(past) - 1 - i) * tick, count, tick, refit=False)
        if past:
            self.seasonal.refit_if_due(now)

    def observe(self, now: float, arrivals: int, interval: float) -> None:
        """Fold in one tick: ``arrivals`` jobs in the ``interval`` seconds before ``now``."""
        if interval <= 0:
            return
        if self.seasonal is not None:
            self.seasonal.observe(now, arrivals, interval)
            rate = arrivals / interval - self.seasonal.offset(now - interval / 2)
        else:
            rate = arrivals / interval
        if self.steady is not None:
            self.steady.observe(now, arrivals, interval)
        p = self._per_tick
        if self.level is None:
            self.level = rate
            return
        predicted = self.level + p.phi * self.trend
        error = rate - predicted
        self.level = predicted + p.alpha * error
        self.trend = p.phi * self.trend + p.alpha * p.beta * error
        self.variance += p.variance_gain * (error * error - self.variance)
        if not math.isfinite(self.level + self.trend + self.variance):
            # An absurd level (a restored document's, a counter read as 10^200 jobs) squared past
            # the float range: the variance would stay infinite, then NaN, for good. Start over.
            self.level, self.trend, self.variance = rate, 0.0, 0.0

    def warm_start(self, arrival_times: Sequence[float], now: float) -> int:
        """Fold in past arrivals (same clock as ``now``) as whole ticks ending at ``now``.

        For a policy that has no saved state: a level and trend from recent history beat starting
        from zero. Returns the number of ticks folded in.
        """
        if not arrival_times:
            return 0
        tick = self.tick_seconds
        ticks = max(1, math.ceil((now - min(arrival_times)) / tick))
        counts = [0] * ticks
        first = now - ticks * tick
        for t in arrival_times:
            counts[min(ticks - 1, max(0, int((t - first) // tick)))] += 1
        for i, count in enumerate(counts):
            self.observe(now - (ticks - 1 - i) * tick, count, tick)
        return ticks

    def forecast(self, now: float, horizon_seconds: float, z: float) -> RateForecast:
        """Average rate over (now, now + horizon] and its upper quantile at ``z`` standard errors."""
        if self.level is None:
            return RateForecast(0.0, 0.0)
        p = self._per_tick
        steps = max(1, math.ceil(horizon_seconds / self.tick_seconds))
        mean = self.level + self.trend * _damped_sum(p.phi, steps) / steps
        seasonal = self.seasonal is not None and self.seasonal.ready
        offset = at_ready = 0.0
        if self.seasonal is not None:
            offset = self.seasonal.mean_offset(now, now + horizon_seconds)
            end = now + horizon_seconds
            at_ready = self.seasonal.mean_offset(max(now, end - self.tick_seconds), end)
            mean += offset
        # A falling trend extrapolated past zero is no arrival rate. After a burst the trend stays
        # negative for minutes (a third of the Azure code trace's ticks read below zero, down to
        # -1 job/s), and the backlog projection took that for jobs leaving the queue by themselves,
        # up to thirty over one warm-up.
        mean = max(mean, 0.0)
        # The queueing model already prices Poisson arrival noise, so only the variability beyond
        # it counts here: residual variance in excess of a Poisson process at this level (bursts,
        # regime changes), spread along the horizon, plus the estimate's own error in the level.
        poisson = max(mean, 0.0) / self.tick_seconds
        level_error = poisson * p.alpha / (2.0 - p.alpha)
        steady = None if seasonal or self.steady is None else self.steady.line(now + horizon_seconds / 2)
        if steady is not None:
            rate, rate_error = steady
            either = max(mean, rate, 0.0) / self.tick_seconds
            holt_error = either * p.alpha / (2.0 - p.alpha)
            # Take the line only where the Holt level agrees with it: a ramp or a flash crowd
            # the line has not caught up with shows up here first, and Holt answers it at once.
            # And not where it is far noisier than the level (STEADY_NOISE_RATIO): a line through
            # the minute after a cut, read half a long warm-up ahead, is mostly its slope's noise,
            # and that noise also widened the agreement test enough to let it through.
            steadier = rate_error <= STEADY_NOISE_RATIO * holt_error
            if steadier and abs(mean - rate) <= STEADY_AGREEMENT_Z * math.sqrt(holt_error + rate_error):
                mean, level_error, poisson = rate, rate_error, either
            else:
                steady = None
        excess = max(0.0, self.variance - poisson)
        spread = math.sqrt(excess * (1.0 / steps + p.alpha**2 * (steps - 1) / 2) + level_error)
        return RateForecast(
            mean=mean,
            upper=mean + z * spread,
            seasonal=seasonal,
            steady=steady is not None,
            seasonal_offset=offset,
            seasonal_at_ready=at_ready,
        )


def _damped_sum(phi: float, steps: int) -> float:
    """Sum over h = 1..steps of sum_{i<=h} phi^i: what the trend adds over a horizon, in trends.

    Looped while the horizon is short (every replay's, bit for bit as always); beyond
    ``HORIZON_LOOP_STEPS`` in closed form, so a tick costs the same whatever the startup estimate.
    """
    if steps > HORIZON_LOOP_STEPS:
        if phi == 1.0:
            return steps * (steps + 1.0) / 2.0  # in floats: an absurd horizon gives inf, not an error
        return phi / (1.0 - phi) * (steps - phi * (1.0 - phi**steps) / (1.0 - phi))
    cumulative = 0.0
    damp = 0.0
    power = 1.0
    for _ in range(steps):
        power *= phi
        damp += power
        cumulative += damp
    return cumulative
