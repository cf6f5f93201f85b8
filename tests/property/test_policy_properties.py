"""Properties of the sizing function and the stateful policy, over generated situations."""

import json
import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.engine.forecast import RateForecast
from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.sizing import SizingInputs, size
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec

NOW = 1000.0


@st.composite
def pods(draw: st.DrawFn, most: int = 40) -> tuple[PodView, ...]:
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from([PodPhase.READY, PodPhase.STARTING, PodPhase.DRAINING]),
                st.floats(0, NOW),
                st.integers(0, 2),
            ),
            max_size=most,
        )
    )
    # A starting pod may be busy too: one whose readiness probe fails while it serves a job.
    return tuple(PodView(f"pod-{i}", phase, created, busy) for i, (phase, created, busy) in enumerate(specs))


@st.composite
def sizing_inputs(draw: st.DrawFn) -> SizingInputs:
    """Situations on the scale of the pods at hand, so that most of them are decided inside the bounds.

    Rates are drawn as shares of what the pods drawn serve (at least one pod's worth), the queue
    up to a round of them, and the pool, holds and window peak around the maximum. Drawn on absolute
    scales, most situations asked for far more than the maximum, and every monotonicity property
    held trivially at the clamp.
    """
    lo = draw(st.integers(0, 10))
    hi = draw(st.integers(max(lo, 1), 250))
    pod_set = draw(pods(most=min(40, hi + 5)))
    slots = draw(st.integers(1, 4))
    service = draw(st.floats(0.1, 30))
    full = max(len(pod_set), 1) * slots / service  # jobs/s the pods drawn serve

    def rate(share: float = 1.2) -> float:
        return draw(st.floats(0, share * full))

    mean = rate()
    return SizingInputs(
        now=NOW,
        waiting=draw(st.integers(0, max(len(pod_set), 1) * slots)),
        in_flight=sum(p.busy_slots for p in pod_set),
        current=sum(1 for p in pod_set if p.phase is not PodPhase.DRAINING),
        pods=pod_set,
        rate_now=rate(),
        rate_last_tick=rate(),
        burst_persistence=draw(st.floats(0, 1)),
        long_rate=draw(st.none() | st.floats(0, 1.2 * full)),
        forecast_persistence=draw(st.floats(0, 1)),
        short_window_seconds=draw(st.floats(5, 60)),
        forecast=RateForecast(
            mean,
            mean + rate(0.4),
            seasonal_offset=draw(st.floats(-0.2 * full, 0.2 * full)),
            seasonal_at_ready=draw(st.floats(-0.2 * full, 0.4 * full)),
        ),
        service_time=service,
        startup_time=draw(st.floats(0, 120)),
        service_cv2=draw(st.floats(0, 4)),
        standing_pool=draw(st.integers(0, hi + 5)),
        season_hold=draw(st.integers(0, hi + 5)),
        slots_per_pod=slots,
        slo_seconds=draw(st.floats(1, 60)),
        miss_probability=draw(st.floats(0.001, 0.4)),
        drain_seconds=draw(st.floats(1, 60)),
        min_replicas=lo,
        max_replicas=hi,
        window_peak=draw(st.none() | st.integers(0, hi + 5)),
        max_step_up=draw(st.none() | st.integers(1, 50)),
        max_step_down=draw(st.none() | st.integers(1, 50)),
    )


@st.composite
def shrinking_inputs(draw: st.DrawFn) -> SizingInputs:
    """A situation whose load has fallen to a share of what its pods serve, with nothing holding them.

    Most :func:`sizing_inputs` keep every pod (a window peak, a standing pool or a hold above the
    need), so the rules about which pods go would rarely be exercised; here pods are let go.
    """
    inp = draw(sizing_inputs())
    calm = draw(st.floats(0, 0.3))
    f = inp.forecast
    forecast = replace(
        f,
        mean=f.mean * calm,
        upper=f.upper * calm,
        seasonal_offset=f.seasonal_offset * calm,
        seasonal_at_ready=f.seasonal_at_ready * calm,
    )
    return replace(
        inp,
        waiting=0,
        rate_now=inp.rate_now * calm,
        rate_last_tick=inp.rate_last_tick * calm,
        long_rate=None if inp.long_rate is None else inp.long_rate * calm,
        forecast=forecast,
        window_peak=None,
        standing_pool=0,
        season_hold=0,
        min_replicas=0,
        max_step_down=None,
    )


@st.composite
def free_inputs(draw: st.DrawFn) -> SizingInputs:
    """A situation that no hold, standing pool, step limit or minimum decides: the terms do.

    In most :func:`sizing_inputs` one of those rules fixes the count (a standing pool or a step
    limit in two of three), so a property comparing two decisions mostly compared that rule with
    itself; here the SLO and backlog terms, and the pods they keep or let go, decide.
    """
    inp = draw(sizing_inputs())
    # Half of them with the queue at the ready slots' edge, where the backlog's projection
    # changes rule (a queue building, or not).
    edge = sum(p.phase is PodPhase.READY for p in inp.pods) * inp.slots_per_pod + draw(st.integers(-2, 1))
    waiting = draw(st.sampled_from([inp.waiting, max(0, edge)]))
    return replace(
        inp,
        waiting=waiting,
        standing_pool=0,
        season_hold=0,
        window_peak=None,
        max_step_up=None,
        max_step_down=None,
        min_replicas=0,
    )


def served_rate(inp: SizingInputs) -> float:
    """Jobs/s the pods at hand serve (at least one pod's worth): the scale a change is drawn on."""
    return max(len(inp.pods), 1) * inp.slots_per_pod / inp.service_time


def more(data: st.DataObject, scale: float) -> float:
    """An increase on the situation's own scale (a share of it), or now and then a large one."""
    return data.draw(st.floats(0, 2).map(lambda share: share * scale) | st.floats(0, 30), label="more")


@settings(max_examples=300, deadline=None)
@given(sizing_inputs())
def test_desired_within_bounds(inp: SizingInputs) -> None:
    d = size(inp)
    assert inp.min_replicas <= d.desired <= inp.max_replicas
    if inp.waiting > 0:  # queued jobs always have a pod to run on, whatever the forecast says
        assert d.desired >= 1


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | free_inputs() | shrinking_inputs(), st.integers(1, 5), st.integers(1, 5))
def test_a_step_moves_no_further_than_its_limits_allow(inp: SizingInputs, up: int, down: int) -> None:
    """Only the operator's hard bounds may move the count past a step limit."""
    inp = replace(inp, max_step_up=up, max_step_down=down)
    d = size(inp)
    assert d.desired <= max(inp.current + up, inp.min_replicas)
    assert d.desired >= min(inp.current - down, inp.max_replicas)


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | shrinking_inputs() | free_inputs())
def test_never_removes_a_busy_or_draining_pod(inp: SizingInputs) -> None:
    d = size(inp)
    by_name = {p.name: p for p in inp.pods}
    assert all(not by_name[name].busy and by_name[name].phase is not PodPhase.DRAINING for name in d.remove)
    assert len(d.remove) <= max(0, inp.current - d.desired)
    # Below the hard maximum, the count never asks for more removals than idle/starting pods allow.
    if d.desired < inp.max_replicas:
        assert len(d.remove) == max(0, inp.current - d.desired)


@given(sizing_inputs() | shrinking_inputs() | free_inputs(), st.integers(1, 10), st.integers(0, 1))
def test_draining_pods_change_no_decision(inp: SizingInputs, extra: int, busy: int) -> None:
    """Pods on their way out take no new job: the pods ordered and the pods picked to go are the
    same with any number of them (they count in neither the spec count nor the capacity)."""
    leaving = tuple(
        PodView(f"leaving-{i}", PodPhase.DRAINING, NOW - 100.0, busy, ready_at=NOW - 70.0)
        for i in range(extra)
    )
    more_pods = replace(inp, pods=inp.pods + leaving, in_flight=inp.in_flight + busy * extra)
    before, after = size(replace(inp, in_flight=more_pods.in_flight)), size(more_pods)
    assert (after.desired, after.remove) == (before.desired, before.remove)


@settings(max_examples=1000, deadline=None)
@given(sizing_inputs() | free_inputs(), st.data())
def test_non_decreasing_in_waiting_jobs(inp: SizingInputs, data: st.DataObject) -> None:
    slots = max(len(inp.pods), 1) * inp.slots_per_pod
    extra = data.draw(st.integers(0, 2) | st.integers(0, 2 * slots) | st.integers(0, 3000), label="extra")
    assert size(replace(inp, waiting=inp.waiting + extra)).desired >= size(inp).desired


@settings(max_examples=1000, deadline=None)
@given(sizing_inputs() | free_inputs(), st.data())
def test_non_decreasing_in_forecast_rate(inp: SizingInputs, data: st.DataObject) -> None:
    more_mean, more_upper = more(data, served_rate(inp)), more(data, served_rate(inp))
    higher = replace(
        inp.forecast, mean=inp.forecast.mean + more_mean, upper=inp.forecast.upper + more_mean + more_upper
    )
    assert size(replace(inp, forecast=higher)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | free_inputs(), st.data())
def test_non_decreasing_in_the_season_ahead(inp: SizingInputs, data: st.DataObject) -> None:
    ahead = replace(
        inp.forecast, seasonal_at_ready=inp.forecast.seasonal_at_ready + more(data, served_rate(inp))
    )
    assert size(replace(inp, forecast=ahead)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | shrinking_inputs(), st.integers(0, 45))
def test_the_season_hold_keeps_pods_and_never_orders_one(inp: SizingInputs, hold: int) -> None:
    inp = replace(inp, season_hold=hold)
    without = size(replace(inp, season_hold=0)).desired
    assert without <= size(inp).desired <= max(without, min(inp.current, inp.max_replicas))


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | free_inputs(), st.data())
def test_non_decreasing_in_the_newest_ticks_rate(inp: SizingInputs, data: st.DataObject) -> None:
    newest = inp.rate_last_tick + more(data, served_rate(inp))
    assert size(replace(inp, rate_last_tick=newest)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs())
def test_decision_explains_itself(inp: SizingInputs) -> None:
    d = size(inp)
    assert d.reason
    assert d.terms["desired"] == d.desired
    assert {"slo_pods", "backlog_pods", "forecast_upper", "startup_time"} <= set(d.terms)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 300)), min_size=1, max_size=60),
    st.integers(0, 5),
    st.integers(5, 200),
)
def test_policy_over_time_stays_in_bounds_and_holds_on_stale(
    ticks: list[tuple[int, int]], lo: int, hi: int
) -> None:
    spec = WorkloadSpec(min_replicas=lo, max_replicas=max(hi, lo, 1))
    policy = StartupAwarePolicy(spec, StartupAwareConfig())
    replicas = 1
    for i, (arrivals, waiting) in enumerate(ticks):
        now = 5.0 * (i + 1)
        pod_set = tuple(PodView(f"p{j}", PodPhase.READY, 0.0, busy_slots=j % 2) for j in range(replicas))
        snap = Snapshot(now, waiting, replicas // 2, arrivals, 5.0, replicas, pod_set)
        d = policy.decide(snap)
        assert spec.min_replicas <= d.desired <= spec.max_replicas
        stale = policy.decide(replace(snap, now=now + 0.5, stale=True))
        assert stale.desired == replicas and stale.reason == "stale-signals-hold"
        replicas = d.desired


def test_fresh_policy_does_not_scale_down_on_its_first_tick() -> None:
    policy = StartupAwarePolicy(WorkloadSpec())
    pod_set = tuple(PodView(f"p{j}", PodPhase.READY, 0.0) for j in range(10))
    d = policy.decide(Snapshot(5.0, 0, 0, 0, 5.0, 10, pod_set))
    assert d.desired == 10 and d.reason == "scale-down-window"


# Samples a live source can hand over: valid ones, and the glitches the estimators must ignore.
SAMPLE = st.sampled_from([0.0, 1e-9, 0.5, 5.0, 30.0, 1e7, -1.0, math.nan, math.inf])


@st.composite
def live_ticks(draw: st.DrawFn) -> list[Snapshot]:
    """Snapshots as a daemon builds them, glitches included, each valid by the Snapshot's contract.

    The clock mostly advances a tick but may stall or step back a little; intervals may be 0 (a
    first read, a stalled counter); arrivals may come negative (a counter other software wrote);
    pods come in every phase, busy beyond their slots, created in the future, under one name
    twice; samples include 0 (a whole batch of them), NaN, negatives and absurd warm-ups; some
    ticks are stale.
    """
    now = 1000.0
    ticks = []
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([5.0, 5.0, 5.0, 1.0, 0.0, -0.5, 60.0]))
        specs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(list(PodPhase)),
                    st.floats(now - 300.0, now + 60.0),
                    st.integers(0, 3),
                    st.integers(0, 12),
                ),
                max_size=12,
            )
        )
        pod_set = tuple(PodView(f"pod-{k}", phase, created, busy) for phase, created, busy, k in specs)
        ticks.append(
            Snapshot(
                now=now,
                waiting=draw(st.integers(0, 400)),
                in_flight=draw(st.integers(0, 50)),
                arrivals=draw(st.integers(-100, 500)),
                interval=draw(st.sampled_from([5.0, 5.0, 0.0, 1.0, 60.0])),
                current_replicas=draw(st.sampled_from([len(pod_set), draw(st.integers(0, 30))])),
                pods=pod_set,
                # A batch of jobs measured at 0 s (cache hits): the estimate itself reaches 0.
                service_times=draw(st.lists(SAMPLE, max_size=30).map(tuple) | st.just((0.0,) * 25)),
                startup_times=tuple(draw(st.lists(SAMPLE, max_size=3))),
                slots_per_pod=draw(st.integers(1, 2)),
                stale=draw(st.booleans()) and draw(st.booleans()),
            )
        )
    return ticks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(live_ticks(), st.integers(0, 3), st.integers(1, 40), st.sampled_from([None, 60.0]))
def test_no_glitch_crashes_a_tick_or_leaves_the_bounds_or_the_state_unsaveable(
    ticks: list[Snapshot], lo: int, span: int, season: float | None
) -> None:
    """The daemon's contract with the policy: a bad sample costs at most its own tick.

    Every tick (and every surge asked between them) is answered within the bounds, without
    removing a busy pod, with finite terms; and what was learned still saves as JSON and
    restores into a policy that decides the next tick exactly alike.
    """
    spec = WorkloadSpec(min_replicas=lo, max_replicas=lo + span)
    policy = StartupAwarePolicy(spec, StartupAwareConfig(season_seconds=season))
    for snap in ticks:
        if isinstance(surge := policy.surge(snap), Decision):
            assert surge.desired > snap.current_replicas
        d = policy.decide(snap)
        if snap.stale:
            assert d.desired == snap.current_replicas
            continue
        assert spec.min_replicas <= d.desired <= spec.max_replicas
        removable = {p.name for p in snap.pods if p.phase is not PodPhase.DRAINING and not p.busy}
        assert set(d.remove) <= removable
        assert all(math.isfinite(v) for v in d.terms.values())
    document = json.loads(json.dumps(policy.export_state(), allow_nan=False))
    restored = StartupAwarePolicy(spec, StartupAwareConfig(season_seconds=season))
    restored.restore_state(document)
    after = replace(ticks[-1], now=ticks[-1].now + 5.0, stale=False)
    assert restored.decide(after) == policy.decide(after)
