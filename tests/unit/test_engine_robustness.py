"""What one bad reading does to the engine: refused at the Snapshot, or ignored, never kept.

The policy runs inside a daemon every few seconds for months. A value no reading can mean must be
refused where the snapshot is built, naming the field; a glitch a live source can produce (a
counter written by other software, a job measured at 0 s, a warm-up measured from a creation time
of 0, a clock step) must cost at most that tick, never a hang, a crash on every later tick, or
estimators it poisons for good.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.engine.baselines import KedaPolicy, KpaPolicy
from autoscaler.engine.forecast import (
    HORIZON_LOOP_STEPS,
    RateForecast,
    RateForecaster,
    SeasonalProfile,
    _damped_sum,
)
from autoscaler.engine.policy import MIN_SERVICE_SECONDS, StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.queueing import slots_for_wait_slo
from autoscaler.engine.sizing import SizingInputs, size
from autoscaler.engine.snapshot import (
    MAX_CLOCK_SECONDS,
    MAX_COUNT,
    MAX_SLOTS_PER_POD,
    MIN_RATE_INTERVAL_SECONDS,
    Decision,
    PodPhase,
    PodView,
    Policy,
    Snapshot,
    bounded,
)
from autoscaler.engine.standing_pool import StandingPool
from autoscaler.engine.target import WorkloadSpec

WORKLOAD = WorkloadSpec()
PODS = tuple(PodView(f"p{i}", PodPhase.READY, 0.0, busy_slots=i % 2) for i in range(6))


def tick(i: int, **changes: Any) -> Snapshot:
    """The i-th of a steady run of ticks: 5 jobs per 5 s, six ready pods, a few samples."""
    snap = Snapshot(1000.0 + 5.0 * i, 2, 3, 5, 5.0, 6, PODS, (5.0,) * 3, (30.0,) if i < 3 else ())
    return replace(snap, **changes)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("now", math.nan),
        ("now", math.inf),
        ("interval", math.nan),
        ("interval", math.inf),
        ("interval", -1.0),
        ("waiting", -1),
        ("in_flight", -1),
        ("current_replicas", -1),
        ("slots_per_pod", 0),
        ("slots_per_pod", MAX_SLOTS_PER_POD + 1),
        ("slots_per_pod", 10**400),
        ("now", 1e300),  # "now - 60" is "now" from about 1e17 on: a window held nothing
        ("now", -1.7e308),
        ("interval", 1e300),
    ],
)
def test_a_snapshot_refuses_what_no_reading_means_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"invalid Snapshot field\(s\): {field}="):
        tick(0, **{field: value})


def test_a_snapshot_lets_a_negative_arrivals_count_through() -> None:
    """A live counter written by other software can difference below zero: the policy handles it."""
    assert tick(0, arrivals=-3, interval=0.0).arrivals == -3


def test_a_negative_arrivals_count_is_an_interval_without_data() -> None:
    glitched, clean = StartupAwarePolicy(WORKLOAD), StartupAwarePolicy(WORKLOAD)
    for i in range(200):
        bad = i == 50
        a = glitched.decide(tick(i, arrivals=-(10**6)) if bad else tick(i))
        b = clean.decide(tick(i, arrivals=0, interval=0.0) if bad else tick(i))
        assert (a.desired, a.reason) == (b.desired, b.reason), f"tick {i}"
    assert glitched.export_state() == clean.export_state()


def test_a_workload_refuses_more_slots_per_pod_than_a_snapshot_takes() -> None:
    """The daemon copies the config's slots into every snapshot: refused at the config, not each tick."""
    assert WorkloadSpec(slots_per_pod=MAX_SLOTS_PER_POD).slots_per_pod == MAX_SLOTS_PER_POD
    with pytest.raises(ValueError, match=r"invalid WorkloadSpec field\(s\): slots_per_pod"):
        WorkloadSpec(slots_per_pod=MAX_SLOTS_PER_POD + 1)


def test_a_snapshot_takes_the_largest_clock_and_interval_it_admits() -> None:
    assert tick(0, now=MAX_CLOCK_SECONDS, interval=MAX_CLOCK_SECONDS).now == MAX_CLOCK_SECONDS
    assert tick(0, now=-MAX_CLOCK_SECONDS).now == -MAX_CLOCK_SECONDS


POLICIES: dict[str, Any] = {
    "startup-aware": lambda: StartupAwarePolicy(WORKLOAD),
    "seasonal": lambda: StartupAwarePolicy(WORKLOAD, StartupAwareConfig(season_seconds=150.0)),
    "keda": lambda: KedaPolicy(WORKLOAD),
    "kpa": lambda: KpaPolicy(WORKLOAD),
}


def run_ticks(policy: Policy, ticks: int, glitch: int, **changes: Any) -> Decision:
    """Decide ``ticks`` steady ticks, the ``glitch``-th with ``changes``; every decision within bounds.

    The surge answer between ticks is asked for too, with the same snapshot, where a policy has one.
    """
    decision = None
    for i in range(ticks):
        snap = tick(i, **changes) if i == glitch else tick(i)
        decision = policy.decide(snap)
        assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas, f"tick {i}: {decision}"
        surge = getattr(policy, "surge", None)
        if surge is not None:
            surge(snap)
    assert decision is not None
    return decision


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("field", ["waiting", "in_flight", "arrivals", "current_replicas"])
@pytest.mark.parametrize("count", [2**31 - 1, 2**63 - 1, 2**64 + 7, 10**400])
def test_a_count_no_queue_holds_is_decided_within_bounds(policy: str, field: str, count: int) -> None:
    """Counts come from Redis and Kubernetes as whatever another program wrote (a counter key set to
    a 400-digit number parses as an int): a decision, not an OverflowError, and no minutes-long walk.
    """
    run_ticks(POLICIES[policy](), 30, 20, **{field: count})


@pytest.mark.timeout(20)
def test_an_absurd_replica_count_does_not_walk_the_pool_search_that_far() -> None:
    """The search for the SLO pool walked up to the current count: 2**31 - 1 sizes in one tick."""
    policy = StartupAwarePolicy(WORKLOAD)
    decision = run_ticks(policy, 22, 20, current_replicas=2**31 - 1, arrivals=10**9, waiting=10**6)
    assert decision.desired <= WORKLOAD.max_replicas


def test_a_count_beyond_the_bound_reads_as_the_bound_and_a_sane_snapshot_is_left_alone() -> None:
    sane = tick(0)
    assert bounded(sane) is sane
    huge = bounded(tick(0, waiting=10**400, arrivals=2**64, current_replicas=MAX_COUNT))
    assert (huge.waiting, huge.arrivals, huge.current_replicas) == (MAX_COUNT, MAX_COUNT, MAX_COUNT)
    assert (huge.in_flight, huge.interval, huge.pods) == (sane.in_flight, sane.interval, sane.pods)


def test_one_absurd_arrivals_count_leaves_the_windows_running_sums_exact() -> None:
    """2**64 added to a float sum absorbed the real arrivals beside it: once the tick had left the
    short window, the window read no arrivals at all, for as long as the process lived."""
    policy = StartupAwarePolicy(WORKLOAD)
    run_ticks(policy, 80, 50, arrivals=2**64 + 7)
    for window in (policy._rate_now, policy._rate_long):
        assert window is not None
        assert window.arrivals == sum(arrivals for _, arrivals, _ in window.ticks)
    assert policy._rate_now.rate == 1.0  # 5 jobs per 5 s tick


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("interval", [5e-324, 1e-300, 1e-9, MIN_RATE_INTERVAL_SECONDS / 2])
@pytest.mark.parametrize("arrivals", [1, 100, 10**12])
def test_an_interval_too_short_for_a_rate_is_decided_within_bounds(
    policy: str, interval: float, arrivals: int
) -> None:
    """100 jobs over 5e-324 s read as an infinite rate, and the decision raised (ValueError)."""
    run_ticks(POLICIES[policy](), 30, 20, interval=interval, arrivals=arrivals, waiting=1000)


@pytest.mark.parametrize("interval", [5e-324, 1e-9, MIN_RATE_INTERVAL_SECONDS / 2])
def test_an_interval_too_short_for_a_rate_is_an_interval_without_data(interval: float) -> None:
    glitched, clean = StartupAwarePolicy(WORKLOAD), StartupAwarePolicy(WORKLOAD)
    for i in range(120):
        bad = i == 50
        a = glitched.decide(tick(i, arrivals=500, interval=interval) if bad else tick(i))
        b = clean.decide(tick(i, arrivals=0, interval=0.0) if bad else tick(i))
        assert (a.desired, a.reason) == (b.desired, b.reason), f"tick {i}"
    assert glitched.export_state() == clean.export_state()


def test_an_interval_just_long_enough_is_read_as_a_rate() -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    run_ticks(policy, 21, 20, interval=MIN_RATE_INTERVAL_SECONDS, arrivals=1)
    assert policy._rate_now.arrivals == 5 + 1  # the tick before's, and this one's


@pytest.mark.parametrize("samples", ["service_times", "startup_times"])
@pytest.mark.parametrize("value", [1e13, 1e300, 1.7e308])
def test_durations_no_clock_measures_are_dropped_like_infinite_ones(samples: str, value: float) -> None:
    """A window of startups of 1e308 s made the horizon infinite and the forecast NaN: every tick raised."""
    policy = StartupAwarePolicy(WORKLOAD)
    for i in range(40):
        decision = policy.decide(tick(i, **{samples: (value,) * 30}) if 10 <= i < 14 else tick(i))
        assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas, f"tick {i}"
    assert policy.service_estimate == 5.0 and policy.startup_estimate == 30.0


COUNTS = st.one_of(
    st.integers(0, 50), st.sampled_from([2**31 - 1, 2**53 + 1, 2**63 - 1, 2**64, 10**20, 10**400])
)
DURATIONS = st.one_of(
    st.sampled_from([0.0, 5e-324, 1e-9, 5.0, 1.7e9, MAX_CLOCK_SECONDS, 1e300, 1.7e308]),
    st.floats(0.0, 1.7e308),
)
INTERVALS = st.one_of(
    st.sampled_from([0.0, 5e-324, 1e-300, 1e-9, MIN_RATE_INTERVAL_SECONDS, 5.0, 1.7e9, MAX_CLOCK_SECONDS]),
    st.floats(0.0, MAX_CLOCK_SECONDS),
)
CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "waiting": COUNTS,
        "in_flight": COUNTS,
        "arrivals": COUNTS,
        "current_replicas": COUNTS,
        "slots_per_pod": st.sampled_from([1, 4, MAX_SLOTS_PER_POD]),
        "interval": INTERVALS,
        "service_times": st.lists(DURATIONS, max_size=25).map(tuple),
        "startup_times": st.lists(DURATIONS, max_size=5).map(tuple),
        "now": st.sampled_from([0.0, 1e9, MAX_CLOCK_SECONDS, -MAX_CLOCK_SECONDS]),
    },
)


@pytest.mark.timeout(300)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(sorted(POLICIES)), changes=CHANGES, repeated=st.booleans())
def test_any_snapshot_a_source_can_deliver_is_decided_within_bounds(
    policy: str, changes: dict[str, Any], repeated: bool
) -> None:
    """Extreme counts, intervals, durations and clock steps, once or tick after tick: never a raise."""
    subject = POLICIES[policy]()
    for i in range(30):
        snap = tick(i, **changes) if i == 20 or (repeated and i > 20) else tick(i)
        decision = subject.decide(snap)
        assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas, f"tick {i}: {decision}"
        surge = getattr(subject, "surge", None)
        if surge is not None:
            surge(snap)


def test_jobs_measured_at_zero_seconds_do_not_fail_every_tick() -> None:
    """Cache hits and instant failures are valid samples; an estimate of 0 divided by zero."""
    policy = StartupAwarePolicy(WORKLOAD)
    for i in range(10):
        decision = policy.decide(tick(i, service_times=(0.0,) * 25, waiting=40))
        assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas
    assert policy.service_estimate == MIN_SERVICE_SECONDS
    burst = tick(10, now=tick(9).now + 1.0, interval=1.0, arrivals=500, waiting=500)
    policy.surge(burst)  # the surge test divides by the estimate too


def test_one_absurd_job_duration_does_not_hold_the_pool_at_the_maximum() -> None:
    """Its square left the float range: the variability read NaN and sized for the maximum."""
    policy = StartupAwarePolicy(WORKLOAD)
    for i in range(40):
        decision = policy.decide(tick(i, service_times=(5.0, 5.0, 5.0, 1e300) if i == 10 else (5.0,) * 3))
        assert decision.desired < 20, f"tick {i}"
    assert math.isfinite(policy._service.cv2())


def inputs(rate: float, **changes: Any) -> SizingInputs:
    base = SizingInputs(
        now=1000.0,
        waiting=0,
        in_flight=0,
        current=6,
        pods=PODS,
        rate_now=0.0,
        short_window_seconds=10.0,
        forecast=RateForecast(rate, rate),
        service_time=5.0,
        startup_time=30.0,
        service_cv2=1.0,
        slots_per_pod=1,
        slo_seconds=10.0,
        miss_probability=0.01,
        drain_seconds=10.0,
        min_replicas=0,
        max_replicas=20,
    )
    return replace(base, **changes)


@pytest.mark.timeout(20)
def test_an_absurd_rate_is_sized_in_bounded_time() -> None:
    """A counter jump read as 10^12 jobs/s walked 5 * 10^12 Erlang steps for a pool the max clips."""
    decision = size(inputs(1e12))
    assert (decision.desired, decision.reason) == (20, "max-replicas")
    assert decision.terms["slo_pods"] == 21  # one more than any count in play
    with pytest.raises(ValueError, match="arrival_rate must be finite"):
        slots_for_wait_slo(math.nan, 5.0, 5.0, 0.01)


@pytest.mark.parametrize("rate", [0.0, 0.1, 1.0, 3.7, 10.0, 40.0])
@pytest.mark.parametrize("limit", [0, 1, 5, 30, 200])
def test_a_limited_search_answers_the_smaller_of_the_need_and_the_limit(rate: float, limit: int) -> None:
    need = slots_for_wait_slo(rate, 5.0, 5.0, 0.01, 0.5)
    assert slots_for_wait_slo(rate, 5.0, 5.0, 0.01, 0.5, limit=limit) == min(need, limit)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("season", [None, 150.0])
def test_an_absurd_startup_sample_costs_no_more_than_a_normal_tick(season: float | None) -> None:
    """A creation time read as 0 measures a 55-year warm-up; the horizon loops took minutes a tick.

    One such sample among normal ones is capped at 20 medians now (``SampleQuantiles.quantile``);
    a window of them only (every pod's creation time lost) still plans a 55-year horizon."""
    policy = StartupAwarePolicy(WORKLOAD, StartupAwareConfig(season_seconds=season))
    for i in range(80):
        policy.decide(tick(i, startup_times=(1.7e9, 1.7e9, 1.7e9) if i == 60 else ()))
    assert policy.startup_estimate > 1e9
    decision = policy.decide(tick(80))
    assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas


@pytest.mark.parametrize("phi", [0.8, 0.95, 1.0])
def test_the_closed_form_trend_sum_continues_the_loop(phi: float) -> None:
    looped = _damped_sum(phi, HORIZON_LOOP_STEPS)
    step = phi * (1 - phi ** (HORIZON_LOOP_STEPS + 1)) / (1 - phi) if phi < 1 else HORIZON_LOOP_STEPS + 1
    assert _damped_sum(phi, HORIZON_LOOP_STEPS + 1) == pytest.approx(looped + step, rel=1e-9)


@pytest.mark.timeout(20)
def test_a_clock_step_of_years_closes_the_seasons_buckets_at_once() -> None:
    profile = SeasonalProfile(150.0, 5.0, 60.0)
    profile.observe(5.0, 10, 5.0)
    profile.observe(5.0 + 3e9, 10, 5.0)  # about 95 years later
    assert list(profile._buckets) == [0.0] * (3 * profile.periods)


def test_closing_many_buckets_at_once_keeps_what_one_at_a_time_kept() -> None:
    jumped, stepped = SeasonalProfile(150.0, 5.0, 60.0), SeasonalProfile(150.0, 5.0, 60.0)
    for profile in (jumped, stepped):
        profile.observe(5.0, 10, 5.0)
        profile.observe(10.0, 7, 5.0)
    gap = 3 * jumped.periods + 7  # more buckets than the profile keeps
    for k in range(1, gap):
        stepped.observe(10.0 + 5.0 * k, 0, 5.0)
    jumped.observe(10.0 + 5.0 * gap, 4, 5.0)
    stepped.observe(10.0 + 5.0 * gap, 4, 5.0)
    assert list(jumped._buckets) == list(stepped._buckets)
    assert (jumped._bucket_index, jumped._bucket_arrivals) == (
        stepped._bucket_index,
        stepped._bucket_arrivals,
    )


@pytest.mark.parametrize("season", [25.0, 45.0])
def test_a_short_configured_season_never_fails_a_tick(season: float) -> None:
    """statsmodels needs a season plus ten buckets; at 25 s (5 buckets) every tick raised."""
    policy = StartupAwarePolicy(WORKLOAD, StartupAwareConfig(season_seconds=season))
    for i in range(120):
        policy.decide(tick(i, arrivals=(i % 5) * 6))


@pytest.mark.parametrize("season", [5.0, 10.0, 24.9])
def test_a_season_shorter_than_five_ticks_is_refused_naming_the_knob(season: float) -> None:
    """Three seasons of fewer than five buckets never hold a season plus ten: it was never fitted."""
    with pytest.raises(ValueError, match=r"season_seconds: .* shorter than 5 ticks of 5 s \(25 s\)"):
        StartupAwarePolicy(WORKLOAD, StartupAwareConfig(season_seconds=season))


def test_a_seasonal_fit_that_fails_keeps_the_last_offsets_until_the_next_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = SeasonalProfile(60.0, 5.0, 60.0)
    for i in range(40):
        profile.observe(5.0 * (i + 1), 20 if i % 12 == 0 else 0, 5.0)
    assert profile.ready and profile._offsets is not None
    kept = profile._offsets.copy()

    def fail() -> None:
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(profile, "_refit", fail)
    profile.observe(5.0 * 41 + 60.0, 0, 5.0)  # a refit is due, and fails
    assert np.array_equal(profile._offsets, kept)
    assert profile._last_fit == 5.0 * 41 + 60.0  # tried again one refit interval later, not every tick


def test_the_holt_filter_starts_over_when_its_numbers_leave_the_float_range() -> None:
    forecaster = RateForecaster(5.0)
    forecaster.observe(5.0, 5, 5.0)
    forecaster.level = 1e300  # a restored document's, or a counter read as 10^300 jobs
    forecaster.observe(10.0, 5, 5.0)
    assert (forecaster.level, forecaster.trend, forecaster.variance) == (1.0, 0.0, 0.0)
    forecast = forecaster.forecast(10.0, 35.0, 1.0)
    assert math.isfinite(forecast.mean) and math.isfinite(forecast.upper)


@pytest.mark.timeout(20)
def test_a_probation_resumed_after_a_long_gap_skips_the_empty_seasons_at_once() -> None:
    """Restored from a document days old, or after a clock step, it checked one season at a time."""
    pool = StandingPool(3600.0, 0.85)
    pool.prove(100.0, 150.0)
    now = 100.0 + 150.0 * 1e9
    pool.observe(now, 10, 5.0, 0)
    pool.size(now, 1, 5.0, 5.0, 20)
    assert pool._probation_start is not None and pool._probation_start <= now < pool._probation_start + 150.0
