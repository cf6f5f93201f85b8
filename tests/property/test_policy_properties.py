"""Properties of the sizing function and the stateful policy, over generated situations."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.engine.forecast import RateForecast
from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.sizing import SizingInputs, size
from autoscaler.engine.snapshot import PodPhase, PodView, Snapshot
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
    return tuple(
        PodView(f"pod-{i}", phase, created, busy if phase is not PodPhase.STARTING else 0)
        for i, (phase, created, busy) in enumerate(specs)
    )


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


@settings(max_examples=300, deadline=None)
@given(sizing_inputs())
def test_desired_within_bounds(inp: SizingInputs) -> None:
    d = size(inp)
    assert inp.min_replicas <= d.desired <= inp.max_replicas


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | shrinking_inputs())
def test_never_removes_a_busy_or_draining_pod(inp: SizingInputs) -> None:
    d = size(inp)
    by_name = {p.name: p for p in inp.pods}
    assert all(not by_name[name].busy and by_name[name].phase is not PodPhase.DRAINING for name in d.remove)
    assert len(d.remove) <= max(0, inp.current - d.desired)
    # Below the hard maximum, the count never asks for more removals than idle/starting pods allow.
    if d.desired < inp.max_replicas:
        assert len(d.remove) == max(0, inp.current - d.desired)


@settings(max_examples=300, deadline=None)
@given(sizing_inputs(), st.integers(0, 3000))
def test_non_decreasing_in_waiting_jobs(inp: SizingInputs, extra: int) -> None:
    assert size(replace(inp, waiting=inp.waiting + extra)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs(), st.floats(0, 30), st.floats(0, 30))
def test_non_decreasing_in_forecast_rate(inp: SizingInputs, more_mean: float, more_upper: float) -> None:
    higher = replace(
        inp.forecast, mean=inp.forecast.mean + more_mean, upper=inp.forecast.upper + more_mean + more_upper
    )
    assert size(replace(inp, forecast=higher)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs(), st.floats(0, 30))
def test_non_decreasing_in_the_season_ahead(inp: SizingInputs, more: float) -> None:
    ahead = replace(inp.forecast, seasonal_at_ready=inp.forecast.seasonal_at_ready + more)
    assert size(replace(inp, forecast=ahead)).desired >= size(inp).desired


@settings(max_examples=300, deadline=None)
@given(sizing_inputs() | shrinking_inputs(), st.integers(0, 45))
def test_the_season_hold_keeps_pods_and_never_orders_one(inp: SizingInputs, hold: int) -> None:
    inp = replace(inp, season_hold=hold)
    without = size(replace(inp, season_hold=0)).desired
    assert without <= size(inp).desired <= max(without, min(inp.current, inp.max_replicas))


@settings(max_examples=300, deadline=None)
@given(sizing_inputs(), st.floats(0, 60))
def test_non_decreasing_in_the_newest_ticks_rate(inp: SizingInputs, more: float) -> None:
    assert size(replace(inp, rate_last_tick=inp.rate_last_tick + more)).desired >= size(inp).desired


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
