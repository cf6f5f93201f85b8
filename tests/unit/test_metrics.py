"""What a tick exports to Prometheus, and the HTTP endpoints."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec
from autoscaler.loop import LoopSettings, TargetLoop, TickReport
from autoscaler.metrics import Metrics, MetricsServer
from tests.unit.doubles import TICK, Clock, MemorySource, MemoryTarget


def report(**overrides: Any) -> TickReport:
    pods = (
        PodView("a", PodPhase.READY, 0.0, busy_slots=1, ready_at=30.0),
        PodView("b", PodPhase.STARTING, 90.0),
    )
    snapshot = Snapshot(
        now=100.0, waiting=12, in_flight=1, arrivals=8, interval=5.0, current_replicas=2, pods=pods
    )
    values: dict[str, Any] = {
        "target": "resnet",
        "now": 100.0,
        "snapshot": snapshot,
        "decision": Decision(4, "backlog", {"forecast_mean": 1.5}),
        "acted": True,
        "scaled_to": 4,
        "leader": True,
        "shadow": False,
        "signal_age": 0.2,
        "next_delay": 5.0,
        "estimates": {
            "rate_now": 1.6,
            "forecast_mean": 1.5,
            "forecast_upper": 2.5,
            "standing_pool": 3.0,
            "startup_seconds": 31.0,
            "service_seconds": 4.0,
            "season_seconds": 600.0,
        },  # what startup-aware reports: tests/support/promql.py finds the exported series by them
        "state_saved_at": 95.0,
    }
    values.update(overrides)
    return TickReport(**values)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_tick_sets_the_per_target_series() -> None:
    metrics = Metrics()
    metrics.observe_tick(report())
    t = {"target": "resnet"}
    assert sample(metrics, "autoscaler_desired_replicas", **t) == 4
    assert sample(metrics, "autoscaler_current_replicas", **t) == 2
    assert sample(metrics, "autoscaler_ready_replicas", **t) == 1
    assert sample(metrics, "autoscaler_starting_replicas", **t) == 1
    assert sample(metrics, "autoscaler_waiting_jobs", **t) == 12
    assert sample(metrics, "autoscaler_in_flight_jobs", **t) == 1
    assert sample(metrics, "autoscaler_arrival_rate", **t) == 1.6
    assert sample(metrics, "autoscaler_forecast_rate_upper", **t) == 2.5
    assert sample(metrics, "autoscaler_standing_pool_replicas", **t) == 3.0
    assert sample(metrics, "autoscaler_startup_seconds", **t) == 31.0
    assert sample(metrics, "autoscaler_season_seconds", **t) == 600.0
    assert sample(metrics, "autoscaler_signal_age_seconds", **t) == 0.2
    assert sample(metrics, "autoscaler_decisions_total", target="resnet", reason="backlog") == 1
    assert sample(metrics, "autoscaler_scale_actions_total", target="resnet", direction="up") == 1
    assert sample(metrics, "autoscaler_leader") == 1
    assert sample(metrics, "autoscaler_state_saved_timestamp_seconds", **t) == 95.0
    metrics.observe_tick(report(state_saved_at=None))  # a replica that never saved keeps no value
    assert sample(metrics, "autoscaler_state_saved_timestamp_seconds", **t) == 95.0


def test_a_stale_tick_keeps_the_last_queue_numbers_and_counts_the_error() -> None:
    metrics = Metrics()
    metrics.observe_tick(report())
    stale = report(
        snapshot=Snapshot(
            now=105.0, waiting=0, in_flight=0, arrivals=0, interval=0.0, current_replicas=2, stale=True
        ),
        decision=Decision(2, "stale-signals-hold"),
        acted=False,
        error="source-unavailable",
        signal_age=5.2,
    )
    metrics.observe_tick(stale)
    assert sample(metrics, "autoscaler_waiting_jobs", target="resnet") == 12
    assert sample(metrics, "autoscaler_signals_stale", target="resnet") == 1
    assert sample(metrics, "autoscaler_errors_total", target="resnet", kind="source-unavailable") == 1
    metrics.forget_target("resnet")
    assert sample(metrics, "autoscaler_desired_replicas", target="resnet") is None
    assert sample(metrics, "autoscaler_errors_total", target="resnet", kind="source-unavailable") is None


@dataclass
class _Answer:
    """A policy that answers ``desired`` (letting ``remove`` go first), or raises when ``fail``."""

    desired: int
    remove: tuple[str, ...] = ()
    fail: bool = False

    @property
    def name(self) -> str:
        return "answer"

    def decide(self, snapshot: Snapshot) -> Decision:
        if self.fail:
            raise ZeroDivisionError("bug")
        if snapshot.stale:
            return Decision(snapshot.current_replicas, "stale-signals-hold")
        return Decision(self.desired, "answer", remove=self.remove)


def _loop(policy: _Answer, target: MemoryTarget, source: MemorySource) -> tuple[TargetLoop, Metrics]:
    metrics = Metrics()
    settings = LoopSettings(WorkloadSpec(tick_seconds=TICK))
    loop = TargetLoop("resnet", source, target, policy, settings, observer=metrics, clock=target.clock)
    return loop, metrics


def test_a_tick_that_fails_before_deciding_reports_the_signals_stale() -> None:
    """Kubernetes API down or a policy bug: the count is frozen, so the gauge must not stay "fresh"."""
    clock = Clock()
    policy, target, source = _Answer(2), MemoryTarget(clock), MemorySource(clock)
    loop, metrics = _loop(policy, target, source)

    def stale_after_tick() -> float | None:
        clock.advance()
        loop.tick()
        return sample(metrics, "autoscaler_signals_stale", target="resnet")

    assert stale_after_tick() == 0
    target.fail_observe = True  # the API server is unreachable: no snapshot, no decision
    assert stale_after_tick() == 1
    assert loop.last_report is not None and loop.last_report.error == "target-unavailable"
    target.fail_observe = False
    assert stale_after_tick() == 0
    policy.fail = True
    assert stale_after_tick() == 1
    policy.fail = False
    assert stale_after_tick() == 0
    source.down = True  # Redis unreachable: a stale snapshot the policy holds on
    assert stale_after_tick() == 1


def test_a_policy_reset_is_counted_from_zero_and_forgotten_with_its_target() -> None:
    metrics = Metrics()
    metrics.observe_tick(report())
    assert sample(metrics, "autoscaler_policy_resets_total", target="resnet") == 0
    failed = {"snapshot": None, "decision": None, "acted": False, "error": "policy-error"}
    metrics.observe_tick(report(**failed))
    metrics.observe_tick(report(**failed, policy_reset=True))
    assert sample(metrics, "autoscaler_policy_resets_total", target="resnet") == 1
    assert sample(metrics, "autoscaler_errors_total", target="resnet", kind="policy-error") == 2
    metrics.forget_target("resnet")
    assert sample(metrics, "autoscaler_policy_resets_total", target="resnet") is None


def test_only_a_change_of_the_replica_count_is_a_scale_action() -> None:
    """Re-applying the count to steer which pods go, while a scale-down finishes, is not one."""
    clock = Clock()
    pods = [PodView(name, PodPhase.READY, 0.0, ready_at=30.0) for name in "abcd"]
    target = MemoryTarget(clock, replicas=3, pods=pods)  # the fourth pod has not gone yet
    policy = _Answer(3, remove=("d",))
    loop, metrics = _loop(policy, target, MemorySource(clock))

    def actions(direction: str) -> float | None:
        return sample(metrics, "autoscaler_scale_actions_total", target="resnet", direction=direction)

    clock.advance()
    assert loop.tick().acted and len(target.scaled) == 1  # the target was told which pod to drop
    assert (actions("down"), actions("up")) == (None, None)
    policy.desired = 2
    clock.advance()
    assert loop.tick().acted and target.replicas == 2
    assert (actions("down"), actions("up")) == (1, None)
    policy.desired, policy.remove = 5, ()
    clock.advance()
    assert loop.tick().acted and target.replicas == 5
    assert (actions("down"), actions("up")) == (1, 1)


def test_a_scale_action_is_what_the_target_set_not_what_was_asked() -> None:
    """The target has the last word: it holds a scale-down to spare busy pods, or finds the count
    changed by someone else since the tick read it and writes nothing. Neither is an action."""
    clock = Clock()
    pods = [PodView(name, PodPhase.READY, 0.0, ready_at=30.0) for name in "abcd"]
    target = MemoryTarget(clock, replicas=4, pods=pods, floor=3)  # three busy pods it will spare
    policy = _Answer(1)
    loop, metrics = _loop(policy, target, MemorySource(clock))

    def actions(direction: str) -> float | None:
        return sample(metrics, "autoscaler_scale_actions_total", target="resnet", direction=direction)

    clock.advance()
    first = loop.tick()  # asked 1, the target went to 3: one step down, to 3
    assert first.acted and first.scaled_to == 3 and target.replicas == 3
    assert actions("down") == 1
    clock.advance()
    held = loop.tick()  # asked 1 again: held at 3, nothing changed
    assert held.acted and held.scaled_to is None and target.replicas == 3
    assert actions("down") == 1
    # A report that acted and left the count as it was (a conflict: someone else changed it) is
    # not counted either way, whatever the decision asked.
    metrics.observe_tick(report(scaled_to=None))
    assert (actions("down"), actions("up")) == (1, None)
    metrics.observe_tick(report(decision=Decision(6, "backlog"), scaled_to=3))  # set less than asked
    assert actions("up") == 1


def test_job_latencies_feed_the_histogram_and_the_slo_counters() -> None:
    metrics = Metrics()
    t = {"target": "resnet"}
    metrics.observe_tick(report(slo_seconds=10.0))  # no job finished yet: the series exist at 0
    assert sample(metrics, "autoscaler_jobs_finished_total", **t) == 0
    assert sample(metrics, "autoscaler_jobs_within_slo_total", **t) == 0
    assert sample(metrics, "autoscaler_slo_seconds", **t) == 10.0
    metrics.observe_tick(report(latencies=(5.2, 10.0, 12.5), slo_seconds=10.0))
    # A tick that could not decide still reports the jobs its read consumed.
    metrics.observe_tick(
        report(snapshot=None, decision=None, error="policy-error", latencies=(40.0,), slo_seconds=10.0)
    )
    assert sample(metrics, "autoscaler_jobs_finished_total", **t) == 4
    assert sample(metrics, "autoscaler_jobs_within_slo_total", **t) == 2  # the bound itself is within
    assert sample(metrics, "autoscaler_job_latency_seconds_count", **t) == 4
    assert sample(metrics, "autoscaler_job_latency_seconds_sum", **t) == 5.2 + 10.0 + 12.5 + 40.0
    assert sample(metrics, "autoscaler_job_latency_seconds_bucket", le="10.0", **t) == 2
    assert sample(metrics, "autoscaler_job_latency_seconds_bucket", le="60.0", **t) == 4
    metrics.forget_target("resnet")
    for name in (
        "autoscaler_jobs_finished_total",
        "autoscaler_job_latency_seconds_count",
        "autoscaler_slo_seconds",
    ):
        assert sample(metrics, name, **t) is None


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_http_endpoints() -> None:
    metrics = Metrics()
    metrics.observe_tick(report())
    ready = [False]
    server = MetricsServer(
        "127.0.0.1",
        0,
        metrics,
        health=lambda: (True, {}),
        ready=lambda: (ready[0], {"config": {"valid": True}}),
    ).start()
    try:
        status, text = get(server.port, "/metrics")
        assert status == 200 and 'autoscaler_desired_replicas{target="resnet"} 4.0' in text
        assert get(server.port, "/healthz")[0] == 200
        status, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body) == {"status": "fail", "config": {"valid": True}}
        ready[0] = True
        assert get(server.port, "/readyz")[0] == 200
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_a_measured_service_time_at_the_slo_is_said_once_per_crossing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The policy sized on, towards max_replicas, for 0 % within the SLO, and nothing said why."""
    metrics = Metrics()

    def tick(service: float) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="autoscaler.metrics"):
            estimates = {**(report().estimates or {}), "service_seconds": service}
            metrics.observe_tick(report(estimates=estimates, slo_seconds=10.0))
        return [f"{r.levelname} {r.getMessage()}" for r in caplog.records]

    assert tick(4.0) == []
    (warning,) = tick(10.0)
    assert warning.startswith("WARNING the measured service time is at or above slo_seconds: no replica")
    assert caplog.records[0].fields == {  # type: ignore[attr-defined]
        "target": "resnet",
        "service_seconds": 10.0,
        "slo_seconds": 10.0,
    }
    assert tick(12.5) == []  # once, not every tick
    assert tick(9.0) == ["INFO the measured service time is below slo_seconds again"]
    assert tick(9.5) == []
    assert len(tick(11.0)) == 1  # a new crossing is said again
    metrics.forget_target("resnet")
    assert len(tick(11.0)) == 1  # a target removed and added again starts afresh
