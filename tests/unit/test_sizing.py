"""Worked examples of the sizing arithmetic and the policy's reactions."""

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.engine.forecast import RateForecast
from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.sizing import (
    SizingInputs,
    _ReadyTimes,
    backlog_rate,
    pool_for_backlog,
    projected_backlog,
    size,
    slo_demand,
)
from autoscaler.engine.snapshot import PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec

BASE = SizingInputs(
    now=100.0,
    waiting=0,
    in_flight=0,
    current=0,
    pods=(),
    rate_now=0.0,
    short_window_seconds=10.0,
    forecast=RateForecast(0.0, 0.0),
    service_time=5.0,
    startup_time=30.0,
    service_cv2=1.0,
    slots_per_pod=1,
    slo_seconds=10.0,
    miss_probability=0.05,
    drain_seconds=10.0,
    min_replicas=0,
    max_replicas=200,
)


def ready(n: int, busy: int = 0) -> tuple[PodView, ...]:
    return tuple(PodView(f"r{i}", PodPhase.READY, 0.0, busy_slots=1 if i < busy else 0) for i in range(n))


def test_steady_load_is_sized_by_the_queueing_model() -> None:
    # 10 jobs/s x 5 s = 50 Erlangs; a 5 s wait budget at 5 % miss needs a little more than 50 slots.
    d = size(replace(BASE, forecast=RateForecast(10.0, 10.0), pods=ready(60, 50), current=60, in_flight=50))
    assert d.reason == "slo"
    assert 51 <= d.desired <= 56
    assert d.terms["backlog_pods"] <= 1  # the fluid model keeps at most a pod of drain slack


def test_backlog_when_capacity_short_adds_drain_pods() -> None:
    inp = replace(BASE, waiting=40, rate_now=2.0, forecast=RateForecast(2.0, 2.0), pods=ready(10, 10))
    inp = replace(inp, current=10, in_flight=10, drain_seconds=20.0)
    # 40 + 2*30 arrivals - 10 pods * 30 s / 5 s served = 100 - 60 = 40 jobs
    assert projected_backlog(inp, 2.0) == pytest.approx(40.0)
    d = size(inp)
    slo_pods = int(d.terms["slo_pods"])
    # The first job after the new pods arrive may wait its 5 s budget behind those 40 jobs, and
    # the queue must drain within 20 s on top of the SLO term: the larger of the two wins.
    assert d.desired == max(math.ceil(40 * 5 / 5), slo_pods + math.ceil(40 * 5 / 20))
    assert d.reason == "backlog"


def test_starting_pods_count_towards_the_backlog_capacity() -> None:
    starting = tuple(PodView(f"s{i}", PodPhase.STARTING, 80.0) for i in range(20))
    without = replace(BASE, waiting=300, current=0)
    with_starting = replace(without, pods=starting, current=20)
    # Ready at 110, they serve 20 pods x 20 s / 5 s = 80 jobs before now + startup = 130.
    assert projected_backlog(without, 0.0) - projected_backlog(with_starting, 0.0) == pytest.approx(80.0)


def test_scale_down_removes_starting_then_idle_never_busy() -> None:
    pods = (
        PodView("busy", PodPhase.READY, 0.0, busy_slots=1),
        PodView("idle-old", PodPhase.READY, 0.0),
        PodView("idle-new", PodPhase.READY, 50.0),
        PodView("warming", PodPhase.STARTING, 90.0),
    )
    d = size(replace(BASE, pods=pods, current=4, in_flight=1))
    assert d.desired == 1
    assert d.remove == ("warming", "idle-new", "idle-old")


def test_a_pod_starting_for_over_two_startups_is_not_counted_as_capacity() -> None:
    # Three pods have been "starting" for 100 s against a 30 s estimate: unschedulable or stuck
    # pulling an image. They must not hide the queue from the backlog projection.
    stuck = tuple(PodView(f"stuck{i}", PodPhase.STARTING, 0.0) for i in range(3))
    late = PodView("late", PodPhase.STARTING, 45.0)  # 55 s old: slow, not yet overdue
    busy = replace(BASE, waiting=100, rate_now=2.0, forecast=RateForecast(2.0, 2.0))
    base = replace(busy, pods=(*ready(10, 10), late), current=11, in_flight=10)
    with_stuck = replace(base, pods=base.pods + stuck, current=14)
    assert projected_backlog(with_stuck, 2.0) == pytest.approx(projected_backlog(base, 2.0))
    # The late pod still counts, from now: 30 s x 1 pod / 5 s = 6 jobs.
    no_late = replace(base, pods=ready(10, 10), current=10)
    assert projected_backlog(no_late, 2.0) - projected_backlog(base, 2.0) == pytest.approx(6.0)
    assert size(with_stuck).terms["backlog_jobs"] == pytest.approx(size(base).terms["backlog_jobs"])
    assert size(with_stuck).desired == size(base).desired


def test_scale_down_removes_overdue_starting_pods_first() -> None:
    pods = (
        PodView("idle", PodPhase.READY, 0.0),
        PodView("warming", PodPhase.STARTING, 90.0),
        PodView("stuck", PodPhase.STARTING, 10.0),  # 90 s old, three startup estimates
    )
    d = size(replace(BASE, pods=pods, current=3, window_peak=2))
    assert d.desired == 2
    assert d.remove == ("stuck",)


def test_window_peak_holds_capacity_and_bounds_win() -> None:
    d = size(replace(BASE, pods=ready(8), current=8, window_peak=6))
    assert (d.desired, d.reason) == (6, "scale-down-window")
    d = size(replace(BASE, pods=ready(8), current=8, window_peak=6, min_replicas=7))
    assert (d.desired, d.reason) == (7, "min-replicas")
    d = size(replace(BASE, waiting=10_000, rate_now=50.0, max_replicas=40))
    assert (d.desired, d.reason) == (40, "max-replicas")


def test_a_standing_pool_that_covers_the_need_releases_burst_pods_without_the_window() -> None:
    # Bursty regime: 10 pods stand; 20 were up for a burst that is over (the need is back to 4).
    calm = replace(BASE, forecast=RateForecast(0.5, 0.6), pods=ready(20), current=20, window_peak=18)
    d = size(replace(calm, standing_pool=10))
    assert (d.desired, d.reason) == (10, "standing-pool")
    # While the need itself is above the pool, the window holds as usual.
    d = size(replace(calm, standing_pool=2))
    assert (d.desired, d.reason) == (18, "scale-down-window")


def test_a_small_standing_pool_does_not_release_the_pods_the_usual_traffic_needs() -> None:
    # Smooth traffic at 2 jobs/s (about 14 pods at the long-run rate) has a pool of 4; in a lull
    # the need falls to the pool. The window keeps the usual pods, not the pool alone: released,
    # they come back a warm-up late when the lull ends.
    lull = replace(
        BASE, forecast=RateForecast(0.05, 0.1), pods=ready(15), current=15, window_peak=15, standing_pool=4
    )
    usual = size(replace(lull, long_rate=2.0))
    assert usual.reason == "scale-down-window"
    assert 10 <= usual.desired < 15
    # A burst's pods above the usual traffic still go without the window.
    assert size(replace(lull, long_rate=0.1)).desired == 4
    # Until the long-run rate is known, the pool is the guard as before.
    assert size(lull).desired == 4


def test_catching_up_never_asks_for_more_pods_than_queued_jobs() -> None:
    # 60 s jobs with 1 s to spare: ten free slots start ten queued jobs at once. The fluid count
    # (the backlog's work over the wait budget) asked for ten times that.
    long_jobs = replace(BASE, service_time=60.0, slo_seconds=61.0)
    assert pool_for_backlog(long_jobs, slo_pods=0, backlog=10) == 10
    assert pool_for_backlog(replace(long_jobs, slots_per_pod=4), slo_pods=0, backlog=10) == 3
    # Where the budget is at least a job, the fluid count stands (the reference: 5 s jobs, 5 s).
    assert pool_for_backlog(BASE, slo_pods=0, backlog=12) == 12


def test_pods_ordered_for_a_predicted_peak_stay_until_its_moment() -> None:
    # A standing pool of 10 covers the need read now; 8 more pods were ordered for a seasonal peak
    # still to come and are warming up. The hold keeps them, and never orders a pod itself.
    pods = ready(10) + tuple(PodView(f"s{i}", PodPhase.STARTING, 90.0) for i in range(8))
    calm = replace(BASE, forecast=RateForecast(0.5, 0.6), pods=pods, current=18, standing_pool=10)
    assert (size(calm).desired, size(calm).reason) == (10, "standing-pool")
    d = size(replace(calm, season_hold=18))
    assert (d.desired, d.reason, d.remove) == (18, "season-hold", ())
    d = size(replace(calm, season_hold=14))
    assert d.desired == 14 and len(d.remove) == 4 and all(name.startswith("s") for name in d.remove)
    d = size(replace(calm, season_hold=30))
    assert (d.desired, d.reason) == (18, "season-hold")


def test_step_limits() -> None:
    d = size(replace(BASE, waiting=1000, rate_now=20.0, pods=ready(2), current=2, max_step_up=3))
    assert (d.desired, d.reason) == (5, "step-limit")
    d = size(replace(BASE, pods=ready(20), current=20, max_step_down=4))
    assert (d.desired, d.reason) == (16, "step-limit")


def test_policy_orders_capacity_for_a_burst_and_releases_it_after_the_window() -> None:
    no_pool = StartupAwareConfig(standing_pool_window_seconds=0)
    policy = StartupAwarePolicy(WorkloadSpec(min_replicas=1), no_pool)
    pods = ready(1)
    desired = []
    for i in range(100):
        now = 5.0 * (i + 1)
        arrivals = 100 if i in (2, 3) else 0
        d = policy.decide(Snapshot(now, arrivals, 0, arrivals, 5.0, len(pods), pods))
        desired.append(d.desired)
        pods = ready(d.desired)
    assert max(desired[2:4]) >= 100  # ordered on the first burst tick, not after a backlog aged
    assert desired[5] >= desired[3] * 0.5  # held through a gap shorter than a warm-up
    # Back near the floor once the window has passed (a trace of forecast spread may keep one more).
    assert desired[-1] <= 2


def test_starting_pods_that_drain_the_backlog_are_not_cancelled() -> None:
    # 150 pods ordered 10 s ago for a flash crowd: the backlog only looks drained because they are
    # coming. When they are ready (t=120) 50 + 5*20 - 5*20/5 = 130 jobs are queued, so only the
    # surplus beyond what catches that queue up may be cancelled.
    starting = tuple(PodView(f"s{i}", PodPhase.STARTING, 90.0) for i in range(150))
    inp = replace(
        BASE,
        waiting=50,
        rate_now=5.0,
        forecast=RateForecast(5.0, 5.5),
        pods=ready(5, 5) + starting,
        current=155,
        in_flight=5,
    )
    d = size(inp)
    assert d.desired == 130
    assert len(d.remove) == 155 - d.desired
    assert all(name.startswith("s") for name in d.remove)
    kept = [p for p in inp.pods if p.name not in d.remove]
    backlog = projected_backlog(replace(inp, pods=tuple(kept)), 5.0)
    assert d.desired >= pool_for_backlog(inp, int(d.terms["slo_pods"]), backlog)


def test_flash_crowd_rate_is_used_beyond_the_poisson_wiggle_band() -> None:
    calm = replace(BASE, forecast=RateForecast(1.0, 1.2), rate_now=1.5)
    crowd = replace(calm, rate_now=10.0)
    assert backlog_rate(calm) == 1.0  # a Poisson wiggle: within 2 standard errors of 1.5 in 10 s
    # 10 jobs/s over a 10 s window read at their own level: the band is 2 * sqrt(10 / 10) = 2.
    assert backlog_rate(crowd) == pytest.approx(10.0 - 2.0)
    # Once a queue is building, the whole excess counts.
    assert backlog_rate(replace(crowd, waiting=5)) == pytest.approx(10.0)


def test_burst_rate_is_discounted_by_how_much_of_past_bursts_lasted() -> None:
    crowd = replace(BASE, forecast=RateForecast(1.0, 1.2), rate_now=10.0, waiting=5)
    assert backlog_rate(replace(crowd, burst_persistence=0.25)) == pytest.approx(1.0 + 0.25 * 9.0)
    assert backlog_rate(replace(crowd, burst_persistence=0.0)) == 1.0


def test_a_forecast_just_high_enough_to_hide_a_burst_orders_no_fewer_pods() -> None:
    # Found by the monotonicity property: with the band read at the forecast, a 0 forecast saw a
    # burst (and projected the newest tick's 2 jobs/s, 4 pods) and a 1 job/s forecast did not (2).
    low = replace(
        BASE,
        pods=ready(1),
        current=1,
        rate_now=1.0,
        rate_last_tick=2.0,
        burst_persistence=1.0,
        short_window_seconds=5.0,
        service_time=1.0,
        service_cv2=0.0,
        miss_probability=0.1,
        max_replicas=4,
    )
    high = replace(low, forecast=RateForecast(1.0, 1.0))
    assert backlog_rate(high) >= backlog_rate(low)
    assert size(high).desired >= size(low).desired


def test_a_burst_starting_mid_window_is_projected_at_the_newest_ticks_rate() -> None:
    # Traffic at 5 jobs/s began half-way through the 10 s window: the window reads 2.5 jobs/s,
    # the newest 5 s tick the real 5. The backlog at the horizon is projected with the latter.
    onset = replace(BASE, forecast=RateForecast(0.5, 0.6), rate_now=2.5, rate_last_tick=5.0, waiting=25)
    assert backlog_rate(onset) == 5.0
    # Past its peak the window is the higher estimate, and it wins.
    fading = replace(onset, rate_now=8.0, rate_last_tick=3.0)
    assert backlog_rate(fading) == 8.0
    # A quiet tick after a calm window is no burst: the forecast stands.
    assert backlog_rate(replace(onset, rate_now=0.5, rate_last_tick=0.8, waiting=0)) == 0.5


def test_the_newest_tick_counts_beyond_its_own_poisson_band() -> None:
    # Steady 5 jobs/s read over a 30 s window; a 1 s tick with 11 arrivals happens every minute or
    # so. Its band is 2 * sqrt(11 / 1) = 6.6 jobs/s: no burst (by the window's 0.8 it was 11 - 0.8).
    steady = replace(BASE, forecast=RateForecast(5.0, 5.2), rate_now=5.1, short_window_seconds=30.0)
    second = replace(steady, rate_last_tick=11.0, last_tick_seconds=1.0)
    assert backlog_rate(second) == 5.0
    # The same 11 jobs/s over a whole 5 s tick (55 jobs) is well beyond its band of 3 jobs/s.
    tick = replace(second, last_tick_seconds=5.0)
    assert backlog_rate(tick) == pytest.approx(11.0 - 2.0 * math.sqrt(11.0 / 5.0))
    # And a queue already building counts the second in full.
    assert backlog_rate(replace(second, waiting=5)) == pytest.approx(11.0)


def test_onset_order_starts_the_whole_queue_when_the_pods_come_up() -> None:
    # One warm pod, 25 queued, 5 jobs/s for the 30 s warm-up: 25 + 150 - 6 = 169 jobs wait when
    # new pods are ready, and all of them must start within the 5 s budget (1 job per pod).
    burst = replace(BASE, forecast=RateForecast(0.5, 0.6), rate_now=2.5, rate_last_tick=5.0, waiting=25)
    onset = replace(burst, pods=ready(1), current=1)
    assert size(onset).desired == 169
    assert size(replace(onset, rate_last_tick=0.0)).desired < 169 - 50  # the half-rate window under-orders


def test_the_slo_term_discounts_only_a_forecast_spike_beyond_the_long_run_band() -> None:
    # Long-run 1 job/s; a 10 s reading at that level wiggles by 2 * sqrt(1 / 10) = 0.63.
    spike = replace(BASE, forecast=RateForecast(9.0, 11.0), long_rate=1.0, forecast_persistence=0.25)
    floor = 1.0 + 2.0 * math.sqrt(0.1)
    assert slo_demand(spike) == pytest.approx(11.0 - 0.75 * (9.0 - floor))
    # Excesses that lasted in full, no long-run rate yet (or the discount off): taken at its word.
    assert slo_demand(replace(spike, forecast_persistence=1.0)) == 11.0
    assert slo_demand(replace(spike, long_rate=None)) == 11.0
    # A forecast within Poisson noise of the long-run rate is never discounted.
    wiggle = replace(spike, forecast=RateForecast(1.5, 2.5), forecast_persistence=0.0)
    assert slo_demand(wiggle) == 2.5
    # The pods follow: after a faded spike the SLO term sizes for the long-run rate plus noise.
    faded = size(replace(spike, forecast_persistence=0.0))
    assert faded.terms["demand_rate"] == pytest.approx(11.0 - (9.0 - floor))
    assert faded.terms["slo_pods"] < size(replace(spike, forecast_persistence=1.0)).terms["slo_pods"]


def test_the_backlog_projection_discounts_a_spikes_echo_as_the_slo_term_does() -> None:
    # A 10-s burst is over (nothing arrives now, nothing queued) and the smoothed forecast still
    # reads 9 jobs/s against a long run of 1; such excesses lasted a horizon 25 % of the time.
    floor = 1.0 + 2.0 * math.sqrt(0.1)
    echo = replace(
        BASE, forecast=RateForecast(9.0, 11.0), long_rate=1.0, forecast_persistence=0.25, pods=ready(20)
    )
    echo = replace(echo, current=20)
    assert backlog_rate(echo) == pytest.approx(9.0 - 0.75 * (9.0 - floor))
    # Projected at the echo's 9 jobs/s, 20 ready pods (4 jobs/s) face 150 jobs in 30 s and order
    # pods that come up to an empty queue; at the discounted rate they handle it.
    assert size(replace(echo, long_rate=None)).terms["backlog_jobs"] > 100
    assert size(echo).terms["backlog_jobs"] < size(replace(echo, long_rate=None)).terms["backlog_jobs"] / 2
    # Excesses that always lasted, or no long-run rate yet: the forecast is taken at its word.
    assert backlog_rate(replace(echo, forecast_persistence=1.0)) == 9.0
    assert backlog_rate(replace(echo, long_rate=None)) == 9.0
    # A burst that is still on is not lost: the rate now stands above the discounted mean, and
    # burst persistence of that excess counts.
    on = replace(echo, rate_now=12.0, waiting=30, burst_persistence=0.5)
    discounted = 9.0 - 0.75 * (9.0 - floor)
    assert backlog_rate(on) == pytest.approx(discounted + 0.5 * (12.0 - discounted))


def test_a_seasonal_lift_is_taken_where_the_new_pods_serve_and_never_discounted() -> None:
    # The profile adds 6 jobs/s on average over the horizon, and 9 in its last tick (a cron peak
    # starting there); the long run is 1 job/s and no past spike lasted (persistence 0).
    cron = RateForecast(7.0, 8.0, seasonal=True, seasonal_offset=6.0, seasonal_at_ready=9.0)
    inp = replace(BASE, forecast=cron, long_rate=1.0, forecast_persistence=0.0)
    floor = 1.0 + 2.0 * math.sqrt(0.1)
    assert floor > 7.0 - 6.0  # less its seasonal part, the forecast is no excess: nothing discounted
    assert slo_demand(inp) == pytest.approx(8.0 + 3.0)  # and the peak is taken at the ready tick
    # Without a profile the same numbers are a spike's echo and are discounted to the floor.
    echo = replace(inp, forecast=RateForecast(7.0, 8.0))
    assert slo_demand(echo) == pytest.approx(8.0 - (7.0 - floor))
    # A seasonal dip is not an excess either way: the long-run rate already shows it.
    dip = replace(
        inp, forecast=RateForecast(0.5, 0.8, seasonal=True, seasonal_offset=-4.0, seasonal_at_ready=-4.5)
    )
    assert slo_demand(dip) == pytest.approx(0.8 - 0.5)
    assert size(inp).terms["slo_pods"] > size(echo).terms["slo_pods"]


def after_spikes(config: StartupAwareConfig) -> list[dict[str, float]]:
    """Decision terms 10 s after each of 30 ten-second spikes, 3 min apart, idle in between."""
    policy = StartupAwarePolicy(WorkloadSpec(min_replicas=1), config)
    pods = ready(1)
    terms: list[dict[str, float]] = []
    for i in range(30 * 36):
        phase = i % 36
        arrivals = 60 if phase in (0, 1) else 0  # 12 jobs/s for 10 s
        d = policy.decide(Snapshot(5.0 * (i + 1), 0, 0, arrivals, 5.0, len(pods), pods))
        if phase == 4:  # the spike is over, the forecast still reads it
            terms.append(dict(d.terms))
        pods = ready(d.desired)
    return terms


def test_pods_are_not_ordered_on_a_forecast_that_still_reads_a_spike_that_never_lasts() -> None:
    # Exactly periodic spikes would be found as a season and pre-warmed for: the echo alone here.
    no_pool = {"standing_pool_window_seconds": 0.0, "season_detect_max_seconds": 0.0}
    discounted = after_spikes(StartupAwareConfig(**no_pool))
    literal = after_spikes(StartupAwareConfig(long_window_seconds=0.0, **no_pool))
    # Before the long window is covered every forecast is taken at its word.
    assert discounted[0]["slo_pods"] == literal[0]["slo_pods"]
    assert "long_rate" not in discounted[0]
    last = discounted[-1]
    assert last["forecast_persistence"] < 0.1  # the spikes' excess never lasted a horizon
    assert last["forecast_mean"] > 3 * last["long_rate"]  # while the forecast still reads them high
    # So the SLO term sizes for little more than the long-run rate and the forecast's spread...
    floor = last["long_rate"] + 2.0 * math.sqrt(last["long_rate"] / 10.0)
    assert last["forecast_floor"] == pytest.approx(floor)
    spread = last["forecast_upper"] - last["forecast_mean"]
    assert last["demand_rate"] <= floor + spread + 0.1 * (last["forecast_mean"] - floor)
    # ...and orders fewer pods for every spike once it has learned.
    pairs = zip(discounted[-10:], literal[-10:], strict=True)
    assert all(d["slo_pods"] < lit["slo_pods"] for d, lit in pairs)


@given(
    ready=st.lists(st.sampled_from([0.0, 0.0, 3.0, 12.5, 29.9, 30.0, 41.0, math.inf]), max_size=30).map(
        sorted
    ),
    horizon=st.sampled_from([0.0, 5.0, 12.5, 30.0, 35.0]),
    now=st.sampled_from([0.0, 1234.5, 86_400.0]),
    data=st.data(),
)
def test_the_prefix_sums_give_the_pod_seconds_of_a_loop_over_the_pods(
    ready: list[float], horizon: float, now: float, data: st.DataObject
) -> None:
    """What ``n`` pods serve by the horizon: one bisection over prefix sums, as a sum over the pods."""
    times = [now + offset for offset in ready]
    n = data.draw(st.integers(0, len(times)))
    expected = sum(now + horizon - at for at in times[:n] if at < now + horizon)
    assert _ReadyTimes(times, now).pod_seconds(n, horizon) == pytest.approx(expected, abs=1e-6)


def test_replicas_with_no_pod_behind_them_are_dropped_in_one_decision() -> None:
    """10 replicas, 4 idle pods (6 never created: a quota refused them): an idle queue goes to 0
    in one decision, not 10 -> 6 -> 2 -> 0 as "busy-pods" with no pod busy. Only pods are named."""
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload)
    pods = tuple(PodView(f"w-{i}", PodPhase.READY, 0.0, ready_at=30.0) for i in range(4))
    current, changes = 10, []
    for i in range(40):
        now = 100.0 + i * workload.tick_seconds
        decision = policy.decide(Snapshot(now, 0, 0, 0, workload.tick_seconds if i else 0.0, current, pods))
        assert set(decision.remove) <= {p.name for p in pods}
        if decision.desired < current:
            changes.append((current, decision.desired, decision.reason, len(decision.remove)))
            current = decision.desired
    assert changes[0][:2] == (10, 0) and changes[0][2] != "busy-pods" and changes[0][3] == 4, changes


def test_draining_pods_are_no_capacity_to_plan_on() -> None:
    """A draining pod finishes its job and takes no other. Counted as serving the horizon, five of
    them (after a scale-down, in a rollout) halved what a burst of 60 queued jobs got: 30 pods
    instead of 60."""
    busy = [PodView(f"r{i}", PodPhase.READY, 0.0, busy_slots=1, ready_at=0.0) for i in range(5)]
    draining = [PodView(f"d{i}", PodPhase.DRAINING, 0.0, busy_slots=1, ready_at=0.0) for i in range(5)]

    def sized(pods: list[PodView]) -> int:
        situation = replace(
            BASE,
            now=1000.0,
            waiting=60,
            in_flight=len(pods),
            current=5,
            pods=tuple(pods),
            rate_now=1.0,
            forecast=RateForecast(1.0, 1.2),
            service_cv2=0.0,
            miss_probability=0.01,
        )
        return size(situation).desired

    assert sized(busy + draining) == sized(busy) == 60
