"""The estimator series (forecast, arrival rate, standing pool, warm-up, ...) exist only while the
target's policy estimates them: a hot reload to a policy without them must not leave the old
policy's last values exported for ever."""

from __future__ import annotations

import pytest

from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import Decision, Snapshot
from autoscaler.engine.target import WorkloadSpec
from autoscaler.loop import LoopSettings, TargetLoop, TickReport
from autoscaler.metrics import _ESTIMATE_GAUGES, Metrics
from tests.unit.doubles import Clock, MemorySource, MemoryTarget

ESTIMATE_SERIES = (
    "autoscaler_arrival_rate",
    "autoscaler_forecast_rate",
    "autoscaler_forecast_rate_upper",
    "autoscaler_standing_pool_replicas",
    "autoscaler_startup_seconds",
    "autoscaler_service_seconds",
    "autoscaler_season_seconds",
)


def estimates(metrics: Metrics, target: str = "t") -> dict[str, float | None]:
    return {name: metrics.registry.get_sample_value(name, {"target": target}) for name in ESTIMATE_SERIES}


def _ticks(loop: TargetLoop, source: MemorySource, clock: Clock, n: int) -> None:
    for _ in range(n):
        source.arrivals_total = (source.arrivals_total or 0) + 10
        source.waiting = 3
        loop.tick()
        clock.advance()


@pytest.mark.parametrize("spec", ["keda", "kpa", "static:2"])
def test_a_reload_to_a_policy_without_estimates_drops_their_series(spec: str) -> None:
    clock = Clock(1_000_000.0)
    source, target = MemorySource(clock), MemoryTarget(clock)
    workload = WorkloadSpec(tick_seconds=5, min_replicas=1, max_replicas=20)
    metrics = Metrics()
    loop = TargetLoop(
        "t", source, target, make_policy("startup-aware", workload), LoopSettings(workload),
        observer=metrics, clock=clock,
    )  # fmt: skip
    _ticks(loop, source, clock, 5)
    before = estimates(metrics)
    assert before["autoscaler_forecast_rate"] == 2.0 and before["autoscaler_startup_seconds"] is not None

    loop.reconfigure(LoopSettings(workload), make_policy(spec, workload))  # what a hot reload does
    _ticks(loop, source, clock, 2)
    report = loop.last_report
    assert report is not None and report.decision is not None
    # Whatever the new policy does estimate is its own value; nothing is the old policy's.
    own = {f"autoscaler_{gauge}": (report.estimates or {}).get(key) for gauge, key in _ESTIMATE_GAUGES}
    assert estimates(metrics) == own
    assert metrics.registry.get_sample_value("autoscaler_desired_replicas", {"target": "t"}) is not None


def _report(*, stale: bool = False, decided: bool = True, **estimates: float) -> TickReport:
    snapshot = Snapshot(
        now=100.0, waiting=3, in_flight=0, arrivals=10, interval=5.0, current_replicas=2, stale=stale
    )
    return TickReport(
        target="t",
        now=100.0,
        snapshot=snapshot if decided else None,
        decision=Decision(2, "answer") if decided else None,
        acted=False,
        leader=True,
        shadow=False,
        signal_age=0.1,
        next_delay=5.0,
        error=None if decided else "policy-error",
        estimates=estimates,
    )


def test_a_tick_that_estimated_nothing_new_keeps_the_last_estimates() -> None:
    """A stale hold, or a tick that failed before deciding, says nothing about the estimates: the
    last values stay (as the queue numbers do), and none comes back as a 0."""
    metrics = Metrics()
    metrics.observe_tick(_report(forecast_mean=1.5, rate_now=1.6, startup_seconds=30.0))
    metrics.observe_tick(_report(stale=True, startup_seconds=30.0))  # a hold: terms are not estimates
    metrics.observe_tick(_report(decided=False))
    assert estimates(metrics)["autoscaler_forecast_rate"] == 1.5
    assert estimates(metrics)["autoscaler_arrival_rate"] == 1.6
    metrics.observe_tick(_report(startup_seconds=30.0))  # a fresh tick without a forecast
    assert estimates(metrics)["autoscaler_forecast_rate"] is None
    assert estimates(metrics)["autoscaler_arrival_rate"] is None
    assert estimates(metrics)["autoscaler_startup_seconds"] == 30.0
    metrics.observe_tick(_report(decided=False))  # a failed tick does not bring them back at 0
    metrics.observe_tick(_report(stale=True))
    assert estimates(metrics)["autoscaler_forecast_rate"] is None
    metrics.observe_tick(_report(forecast_mean=0.5))  # a policy that estimates again: the series is back
    assert estimates(metrics)["autoscaler_forecast_rate"] == 0.5


def test_a_policy_that_never_estimates_exports_no_zeros_for_them() -> None:
    """A keda target's dashboard showed a forecast of 0 and a warm-up of 0 from its first tick."""
    metrics = Metrics()
    metrics.observe_tick(_report())
    assert estimates(metrics) == dict.fromkeys(ESTIMATE_SERIES)
    assert metrics.registry.get_sample_value("autoscaler_desired_replicas", {"target": "t"}) == 2
    metrics.forget_target("t")
