"""Windowed rate, robust sample statistics and burst persistence."""

import numpy as np
import pytest

from autoscaler.engine.estimators import BurstPersistence, SampleQuantiles, WindowedRate
from experiments.distributions import LogNormal


def test_windowed_rate_forgets_old_ticks() -> None:
    rate = WindowedRate(10.0)
    rate.observe(5.0, 50, 5.0)
    rate.observe(10.0, 0, 5.0)
    assert rate.rate == pytest.approx(5.0)
    rate.observe(15.0, 0, 5.0)  # the tick at t=5 left the window
    assert rate.rate == pytest.approx(0.0)


def test_windowed_rate_before_data_is_zero() -> None:
    assert WindowedRate(30.0).rate == 0.0
    with pytest.raises(ValueError, match="window_seconds"):
        WindowedRate(0.0)


def test_default_until_enough_samples() -> None:
    est = SampleQuantiles(default=30.0, min_samples=3)
    est.extend((10.0, 12.0))
    assert (est.measured, est.quantile(0.9)) == (False, 30.0)
    est.extend((14.0,))
    assert (est.measured, est.count) == (True, 3)
    assert est.quantile(0.5) == pytest.approx(12.0)


def test_capped_mean_ignores_bad_samples_and_caps_the_slowest() -> None:
    est = SampleQuantiles(default=5.0, min_samples=10)
    est.extend(tuple([5.0] * 18 + [500.0, float("nan"), -1.0, 0.1]))
    assert est.count == 20  # NaN and negative durations are not samples
    # The slowest sample (1 % of 20, at least one) counts as the next slowest.
    assert est.capped_mean() == pytest.approx((19 * 5.0 + 0.1) / 20)


def test_a_common_slow_mode_counts_in_full() -> None:
    """60 % of jobs at 0.2 s and 40 % at 12 s (cache hits and long generations): a cap at 20
    medians cut the slow mode to 4 s, the mean read 1.72 s of 4.92, and the pool was sized for a
    third of the load (17 % of jobs on time where a static pool met 98 %)."""
    samples = [0.2] * 300 + [12.0] * 200
    est = SampleQuantiles(default=5.0, min_samples=10)
    est.extend(tuple(samples))
    assert est.capped_mean() == pytest.approx(np.mean(samples), rel=0.01)
    assert est.cv2() == pytest.approx(np.var(samples) / np.mean(samples) ** 2, rel=0.02)
    assert est.quantile(0.9) == 12.0


def test_startups_that_are_mostly_zero_keep_their_slow_ones() -> None:
    """Pods whose image was cached report warm-ups of 0 s: a median of 0 capped every sample to 0,
    and the p90 said no pod ever needs a warm-up."""
    est = SampleQuantiles(default=30.0, min_samples=5)
    est.extend(tuple([0.0] * 60 + [45.0] * 40))
    assert est.quantile(0.9) == 45.0


def test_one_pathological_startup_among_the_first_few_does_not_set_the_p90() -> None:
    """Nine warm-ups of 30-38 s and one of 1.7e9 s (a creation time read as the epoch): linear
    interpolation put the p90 at 1.7e8 s, and the policy planned every horizon that long."""
    est = SampleQuantiles(default=30.0, min_samples=3, capacity=64)
    est.extend((*(30.0 + k for k in range(9)), 1.7e9))
    assert est.quantile(0.9) == pytest.approx(38.0)  # the slowest counts as the next slowest
    est.extend((1e308,))  # beyond any clock: not a sample
    assert est.count == 10 and est.quantile(0.9) == pytest.approx(38.0)
    few = SampleQuantiles(default=30.0, min_samples=3, capacity=64)
    few.extend((30.0, 60.0, 90.0))  # no outlier: the slowest of few samples counts as it is
    assert few.quantile(0.9) == pytest.approx(84.0)
    slow = SampleQuantiles(default=5.0, min_samples=3, capacity=64)
    regime = [300.0 + 10 * k for k in range(19)] + [3600.0]  # slow, and one slower: not 20 times
    slow.extend(tuple(regime))
    assert slow.quantile(1.0) == 3600.0 and slow.capped_mean() == pytest.approx(float(np.mean(regime)))


def test_one_hung_job_in_a_full_window_does_not_move_the_service_estimate() -> None:
    est = SampleQuantiles(default=5.0, min_samples=10)
    est.extend(tuple([5.0] * 511 + [3600.0]))
    assert est.capped_mean() == pytest.approx(5.0)
    assert est.cv2() == pytest.approx(0.0)


def test_capped_mean_keeps_a_heavy_tail_that_is_real_load() -> None:
    """Lognormal service times, mean 5 s and p90 10 s: the load is their mean, not a trimmed one.

    A 10 % trimmed mean reads about 4.2 s here, and the pool sized on it fell a sixth short.
    """
    rng = np.random.default_rng(7)
    samples = LogNormal(mean=5.0, p90=10.0).draw(rng, 512)
    est = SampleQuantiles(default=1.0, min_samples=10)
    est.extend(tuple(samples.tolist()))
    assert est.capped_mean() == pytest.approx(float(samples.mean()), rel=0.03)  # trimmed: -14 %
    assert est.cv2() == pytest.approx(float(samples.var() / samples.mean() ** 2), rel=0.2)


def test_window_is_bounded() -> None:
    est = SampleQuantiles(default=1.0, min_samples=1, capacity=4)
    est.extend((100.0, 100.0, 100.0, 100.0, 1.0, 1.0, 1.0, 1.0))
    assert est.quantile(0.99) == pytest.approx(1.0)


def test_burst_persistence_trusts_the_first_burst() -> None:
    assert BurstPersistence().ratio == 1.0


def test_burst_persistence_learns_that_spikes_fade() -> None:
    # Each burst projects 10 jobs/s over a 1 forecast over 30 s (270 excess jobs); only 90 of them come.
    spiky = BurstPersistence()
    for burst in range(40):
        start = 100.0 * burst
        spiky.project(start, 30.0, 10.0, 1.0)
        for tick in range(1, 7):
            spiky.observe(start + 5.0 * tick, 20 if tick == 1 else 0)  # 20 in 5 s, then silence
    # 20 arrived against a 30-job baseline: nothing of the excess lasted.
    assert spiky.ratio < 0.05

    lasting = BurstPersistence()
    for burst in range(40):
        start = 100.0 * burst
        lasting.project(start, 30.0, 10.0, 1.0)
        for tick in range(1, 7):
            lasting.observe(start + 5.0 * tick, 50)  # 10 jobs/s for the whole horizon
    assert lasting.ratio == pytest.approx(1.0)


def test_burst_persistence_scores_only_due_projections() -> None:
    p = BurstPersistence()
    p.project(0.0, 30.0, 10.0, 0.0)
    p.observe(5.0, 0)
    assert p.ratio == 1.0  # still open: no evidence yet
    p.observe(30.0, 150)  # 150 of the 300 projected
    assert 0.5 < p.ratio < 1.0  # the prior (one projection that came true) is blended in
