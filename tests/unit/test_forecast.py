"""Holt filter, the steady-traffic line and the seasonal Holt-Winters layer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.engine.forecast import HoltParams, RateForecaster, SteadyRate
from autoscaler.engine.state import dump


def feed(f: RateForecaster, rates: list[float], tick: float = 5.0, start: float = 0.0) -> float:
    now = start
    for r in rates:
        now += tick
        f.observe(now, round(r * tick), tick)
    return now


def test_constant_rate_converges_and_keeps_only_level_error() -> None:
    f = RateForecaster(5.0, steady_window_seconds=0)
    now = feed(f, [10.0] * 100)
    fc = f.forecast(now, 35.0, z=1.64)
    assert fc.mean == pytest.approx(10.0, rel=1e-3)
    assert not fc.steady
    # No variability beyond Poisson: the spread is the filter's own level error at this rate.
    alpha = f.params.alpha
    assert fc.upper - fc.mean == pytest.approx(1.64 * math.sqrt(10.0 / 5.0 * alpha / (2 - alpha)), rel=0.02)


def test_steady_traffic_is_sized_on_the_line_with_its_smaller_error() -> None:
    f = RateForecaster(5.0)
    now = feed(f, [10.0] * 100)
    fc = f.forecast(now, 35.0, z=1.64)
    assert fc.steady
    assert fc.mean == pytest.approx(10.0, rel=1e-9)
    # 500 s of 5 s ticks, read 267.5 s past their centre (the middle of the horizon).
    ticks = np.arange(100) * 5.0
    spread_s2 = 5.0 * np.sum((ticks - ticks.mean()) ** 2)
    line_variance = 10.0 / 500.0 + 10.0 / spread_s2 * 267.5**2
    assert fc.upper - fc.mean == pytest.approx(1.64 * math.sqrt(line_variance), rel=1e-6)
    alpha = f.params.alpha
    assert fc.upper - fc.mean < 0.6 * 1.64 * math.sqrt(10.0 / 5.0 * alpha / (2 - alpha))


def poisson_counts(rates: list[float], seed: int, tick: float = 5.0) -> list[float]:
    """Per-tick Poisson draws at ``rates`` (jobs/s), returned as rates for :func:`feed`."""
    rng = np.random.default_rng(seed)
    return [float(c) / tick for c in rng.poisson(np.asarray(rates) * tick)]


def test_the_steady_line_is_far_less_noisy_than_the_holt_level_on_poisson_traffic() -> None:
    counts = poisson_counts([1.0] * 1440, seed=4)  # two hours at 1 job/s
    means: dict[float, list[float]] = {0.0: [], 600.0: []}
    for window, series in means.items():
        f = RateForecaster(5.0, steady_window_seconds=window)
        now = 0.0
        for i, rate in enumerate(counts):
            now = feed(f, [rate], start=now)
            if i >= 120:
                series.append(f.forecast(now, 35.0, 0.0).mean)
    assert np.std(means[600.0]) < 0.5 * np.std(means[0.0])
    assert abs(np.mean(means[600.0]) - 1.0) < 0.05


def test_a_long_warm_up_reads_steady_traffic_without_the_lines_extrapolated_noise() -> None:
    """A 120 s warm-up reads the rate 62 s ahead; a line through a minute, read there, is mostly slope noise.

    Taken only where it is at most twice as noisy as the Holt level, the forecast at 0.5 job/s
    spreads less over these seeds (0.101 against 0.112 job/s taking every line that agrees).
    """
    spreads = []
    for seed in range(6):
        f = RateForecaster(5.0)
        now, means = 0.0, []
        for i, rate in enumerate(poisson_counts([0.5] * 1440, seed=seed)):
            now = feed(f, [rate], start=now)
            if i >= 360:
                means.append(f.forecast(now, 125.0, 0.0).mean)
        spreads.append(float(np.std(means)))
    assert np.mean(spreads) < 0.105


def test_holt_constants_keep_their_memory_per_second_on_shorter_ticks() -> None:
    p = HoltParams()
    assert p.for_interval(5.0) is p and p.for_interval(15.0) is p  # the reference and longer ticks
    second = p.for_interval(1.0)
    # Five 1 s updates forget what one 5 s update does.
    assert (1 - second.alpha) ** 5 == pytest.approx(1 - p.alpha)
    assert (1 - second.variance_gain) ** 5 == pytest.approx(1 - p.variance_gain)
    assert second.phi**5 == pytest.approx(p.phi)
    # A time-compressed run (the demo's 10x) compresses the reference too, and keeps the constants.
    compressed = HoltParams(reference_seconds=0.5)
    assert compressed.for_interval(0.5) is compressed
    assert compressed.for_interval(0.1).alpha == pytest.approx(second.alpha)


def test_the_holt_level_is_no_noisier_on_one_second_ticks() -> None:
    """Poisson 5 jobs/s: per-update gains made a 1 s tick's level 2.8 times as noisy as a 5 s tick's."""
    rng = np.random.default_rng(11)
    spread: dict[float, float] = {}
    for tick in (5.0, 1.0):
        f = RateForecaster(tick, steady_window_seconds=0)
        levels = []
        for i in range(int(3600 / tick)):
            f.observe((i + 1) * tick, int(rng.poisson(5.0 * tick)), tick)
            if i * tick >= 300:
                levels.append(f.forecast((i + 1) * tick, 35.0, 0.0).mean)
        spread[tick] = float(np.std(levels))
    assert spread[1.0] < 1.2 * spread[5.0]


def test_a_level_shift_is_followed_at_once_and_the_line_refits_after_it() -> None:
    f = RateForecaster(5.0)
    now = feed(f, poisson_counts([2.0] * 120, seed=5))  # ten calm minutes: the line has the rate
    assert f.forecast(now, 35.0, 0.0).steady
    surge = poisson_counts([10.0] * 24, seed=6)
    now = feed(f, surge[:2], start=now)
    first = f.forecast(now, 35.0, 0.0)
    assert not first.steady and first.mean > 5.0  # Holt answers, the stale line is not used
    now = feed(f, surge[2:], start=now)
    after = f.forecast(now, 35.0, 0.0)
    assert f.steady is not None and f.steady.covered < 120.0  # the calm minutes were cut away
    assert after.mean == pytest.approx(10.0, abs=1.5)


def test_a_slow_trend_is_followed_closer_than_by_holt_and_without_a_window_average_lag() -> None:
    errors: dict[float, list[float]] = {0.0: [], 600.0: []}
    rates = [5.0 + 0.004 * 5.0 * i for i in range(240)]  # +0.24 jobs/s per minute for 20 minutes
    for seed in range(20):
        counts = poisson_counts(rates, seed=seed)
        for window, found in errors.items():
            f = RateForecaster(5.0, steady_window_seconds=window)
            now = feed(f, counts)
            found.append(f.forecast(now, 35.0, 0.0).mean - (5.0 + 0.004 * (now + 17.5)))
    steady, holt = np.asarray(errors[600.0]), np.asarray(errors[0.0])
    assert np.sqrt(np.mean(steady**2)) < 0.85 * np.sqrt(np.mean(holt**2))
    # A flat ten-minute average would sit 0.004 * 317.5 = 1.27 jobs/s behind; the line, cut short
    # now and then by the shift test, is a little behind on average.
    assert abs(np.mean(steady)) < 0.5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=300))
def test_the_steady_line_keeps_a_bounded_window_and_a_non_negative_rate(counts: list[int]) -> None:
    line = SteadyRate(600.0)
    now = 0.0
    for count in counts:
        now += 5.0
        line.observe(now, count, 5.0)
        assert line.covered <= 600.0
        fitted = line.line(now + 17.5)
        if fitted is not None:
            assert line.covered >= 60.0
            assert fitted[0] >= 0.0 and fitted[1] > 0.0


def test_upper_quantile_grows_with_variability_beyond_poisson() -> None:
    rng = np.random.default_rng(1)
    poisson, bursty = RateForecaster(5.0), RateForecaster(5.0)
    now = feed(poisson, list(rng.poisson(50, 200) / 5.0))
    feed(bursty, [0.0, 20.0] * 100)  # same mean, far more variable than a Poisson stream
    spread_poisson = poisson.forecast(now, 35.0, 1.64).upper - poisson.forecast(now, 35.0, 1.64).mean
    spread_bursty = bursty.forecast(now, 35.0, 1.64).upper - bursty.forecast(now, 35.0, 1.64).mean
    assert spread_poisson < 1.5
    assert spread_bursty > 2 * spread_poisson


def test_trend_is_followed_but_damped() -> None:
    f = RateForecaster(5.0, HoltParams(alpha=0.5, beta=0.3, phi=0.95))
    ramp = [0.5 + 0.0242 * 5 * i for i in range(120)]  # 0.5 -> ~15 jobs/s over 10 minutes
    now = feed(f, ramp)
    fc = f.forecast(now, 35.0, z=0.0)
    assert fc.mean > ramp[-1]  # looks ahead along the trend
    assert fc.mean < ramp[-1] + 0.0242 * 35 + 0.5  # but no wild extrapolation


def test_the_end_of_a_burst_is_forecast_as_no_traffic_not_as_negative_traffic() -> None:
    """The damped trend of a burst's fall, extrapolated over the horizon, passes below zero."""
    f = RateForecaster(5.0, steady_window_seconds=0)
    now = feed(f, [20.0] * 20 + [0.0] * 8)
    assert f.level is not None and f.level + 3.0 * f.trend < 0.0  # the filter's own extrapolation
    fc = f.forecast(now, 35.0, 1.0)
    assert fc.mean == 0.0 and fc.upper >= 0.0


def test_no_data_means_no_forecast_and_never_negative() -> None:
    f = RateForecaster(5.0)
    assert f.forecast(0.0, 35.0, 2.0).mean == 0.0
    now = feed(f, [20.0, 10.0, 0.0, 0.0, 0.0])
    assert f.forecast(now, 35.0, 2.0).mean >= 0.0


def seasonal_rate(t: float, period: float) -> float:
    return 10.0 + 8.0 * math.sin(2 * math.pi * t / period)


def run_sine(seed: int, period: float, tick: float) -> tuple[RateForecaster, RateForecaster, float]:
    seasonal = RateForecaster(tick, season_seconds=period, refit_every_seconds=period / 4)
    plain = RateForecaster(tick)
    rng = np.random.default_rng(seed)
    now = 0.0
    for _ in range(int(2.5 * period / tick)):
        now += tick
        arrivals = int(rng.poisson(seasonal_rate(now - tick / 2, period) * tick))
        seasonal.observe(now, arrivals, tick)
        plain.observe(now, arrivals, tick)
    return seasonal, plain, now


def test_seasonal_profile_predicts_the_coming_phase() -> None:
    period, tick, horizon = 3600.0, 5.0, 600.0
    errors_seasonal, errors_plain = [], []
    for seed in (0, 1, 2):
        seasonal, plain, now = run_sine(seed, period, tick)
        assert seasonal.seasonal is not None and seasonal.seasonal.fits >= 1
        assert seasonal.forecast(now, horizon, 0.0).seasonal
        # The sine turns within the horizon: the seasonal model knows, Holt alone cannot.
        truth = np.mean([seasonal_rate(now + h, period) for h in np.linspace(0, horizon, 50)])
        errors_seasonal.append(abs(seasonal.forecast(now, horizon, 0.0).mean - truth))
        errors_plain.append(abs(plain.forecast(now, horizon, 0.0).mean - truth))
    assert np.mean(errors_seasonal) < 0.5 * np.mean(errors_plain)
    assert np.mean(errors_seasonal) < 1.5


def test_a_seasonal_peak_is_read_where_pods_ordered_now_first_serve() -> None:
    """A cron-like season: 10 jobs/s for 30 s every 5 min. The forecast, 30 s before a burst with a
    35 s horizon, averages the burst into the horizon but reports it in full at the ready tick."""
    period, tick, horizon = 300.0, 5.0, 35.0
    f = RateForecaster(tick, season_seconds=period, refit_every_seconds=period / 4)
    now = 0.0
    for _ in range(int(3 * period / tick)):
        now += tick
        f.observe(now, 50 if (now - tick) % period < 30 else 0, tick)
    ahead = now + (period - now % period) - 30.0  # 30 s before the next burst begins
    assert f.seasonal is not None and f.seasonal.ready
    forecast = f.forecast(ahead, horizon, 0.0)
    assert forecast.seasonal_at_ready == pytest.approx(f.seasonal.offset(ahead + horizon - tick / 2))
    assert forecast.seasonal_at_ready > 5.0  # the burst's 10 jobs/s, less the season's mean of 1
    assert forecast.seasonal_offset == pytest.approx(f.seasonal.mean_offset(ahead, ahead + horizon))
    assert forecast.seasonal_offset < forecast.seasonal_at_ready - 3.0  # the average dilutes it
    assert RateForecaster(tick).forecast(now, horizon, 0.0).seasonal_at_ready == 0.0


def test_per_tick_work_does_not_grow_with_history() -> None:
    """Bounded state and one refit: what a tick touches is the same after 2,000 ticks or 20,000.

    (The time per tick is a benchmark, ``benchmarks/decision_latency.py``, not a timed test.)
    """
    f = RateForecaster(5.0, season_seconds=600.0, refit_every_seconds=1e12)  # one refit, then none

    def saved_size() -> int:
        """How many values the forecaster keeps (characters would grow with the timestamps' digits)."""

        def count(value: object) -> int:
            if isinstance(value, dict):
                return sum(count(v) for v in value.values())
            if isinstance(value, list):
                return sum(count(v) for v in value)
            return 1

        return count(dump(f))

    feed(f, [10.0] * 400)  # past two seasons: the single refit happens here
    feed(f, [10.0] * 2000, start=2000.0)
    early = saved_size()
    feed(f, [10.0] * 18000, start=12000.0)
    assert f.seasonal is not None and f.seasonal.fits == 1
    assert saved_size() == early
