"""Scoring the live run: wall times scaled back, workers billed like simulated pods, the JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from autoscaler.demo.monitor import WorkerLife
from autoscaler.demo.plan import Plan, Traffic
from autoscaler.demo.report import (
    LIVE,
    LiveRun,
    SloCounters,
    judge,
    live_result,
    measured_startup,
    slo_counters,
    write_json,
)
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.loop import TickReport
from autoscaler.metrics import Metrics
from jobqueue import JobStatus
from jobqueue.records import JobTimes

T0 = 1_000_000.0  # wall epoch of the first arrival
SPEEDUP = 10.0


def job(n: int, submitted: float, wait: float, service: float = 0.5, done: bool = True) -> JobTimes:
    """A job submitted ``submitted`` wall seconds after T0 that waited ``wait`` and ran ``service``."""
    start = T0 + submitted + wait
    return JobTimes(
        id=f"j{n}",
        queue="demo:v1",
        status=JobStatus.SUCCEEDED if done else JobStatus.QUEUED,
        submitted_at=T0 + submitted,
        started_at=start if done else None,
        finished_at=start + service if done else None,
        attempts=1 if done else 0,
    )


def tick(at: float, ready: int, starting: int = 0, waiting: int = 0, acted: bool = False) -> TickReport:
    pods = tuple(PodView(f"r{i}", PodPhase.READY, T0 - 10) for i in range(ready)) + tuple(
        PodView(f"s{i}", PodPhase.STARTING, T0 + at) for i in range(starting)
    )
    snapshot = Snapshot(
        now=T0 + at, waiting=waiting, in_flight=0, arrivals=0, interval=0.5, current_replicas=ready, pods=pods
    )
    decision = Decision(desired=ready + starting, reason="test")
    return TickReport("demo", T0 + at, snapshot, decision, acted, True, False, 0.0, 0.5)


def run(jobs: list[JobTimes], submitted: int | None = None) -> LiveRun:
    lives = [
        WorkerLife("w0", T0 - 5.0, T0 - 1.0, None),  # warm before the first arrival, still running
        WorkerLife("w1", T0 + 1.0, T0 + 4.0, T0 + 6.0),  # 3 s wall warm-up, exited
    ]
    ticks = [tick(-1.0, 1), tick(0.5, 1, starting=1, waiting=2, acted=True), tick(2.0, 2), tick(9.0, 1)]
    return LiveRun(jobs, len(jobs) if submitted is None else submitted, 0, ticks, lives)


def test_live_result_scales_wall_times_back_and_bills_workers_like_pods() -> None:
    jobs = [job(0, 0.0, 0.0), job(1, 1.0, 0.5), job(2, 2.0, 1.5)]
    result = live_result(run(jobs), T0, SPEEDUP)
    assert result.policy == LIVE
    assert result.arrivals.tolist() == pytest.approx([0.0, 10.0, 20.0])
    assert result.latency.tolist() == pytest.approx([5.0, 10.0, 20.0])  # (wait + 0.5) x 10
    assert result.end == pytest.approx(40.0)  # last completion: 2 + 1.5 + 0.5 wall s
    # w0 is billed from the first arrival to the end (40); w1 from 10 to 60, clipped at 40.
    assert result.pod_seconds == pytest.approx(40.0 + 30.0)
    assert result.timeline.times.tolist() == pytest.approx([5.0, 20.0])  # the ticks within 0..end
    assert result.timeline.replicas.tolist() == [2, 2]
    assert result.scale_events == 1 and result.max_replicas == 2


def test_measured_startup_is_spawn_to_ready_in_trace_seconds() -> None:
    lives = [WorkerLife(f"w{i}", 0.0, 3.0 + 0.1 * i) for i in range(5)] + [WorkerLife("x", 0.0)]
    mean, p90, samples = measured_startup(lives, SPEEDUP)
    assert samples == 5 and mean == pytest.approx(32.0)
    assert mean is not None and p90 is not None and mean <= p90 <= 34.0
    assert measured_startup(lives[:2], SPEEDUP)[1] is None  # too few samples for a spread
    assert measured_startup([], SPEEDUP) == (None, None, 0)


def traffic() -> Traffic:
    return Traffic("t.csv", 0.0, 30.0, 3, 1, np.asarray([0.0, 10.0, 20.0]))


def test_judge_scores_live_beside_both_simulated_policies(tmp_path: Path) -> None:
    plan = Plan(speedup=SPEEDUP, max_workers=4)
    jobs = [job(0, 0.0, 0.0), job(1, 1.0, 0.5), job(2, 2.0, 1.5)]
    verdict = judge(plan, run(jobs))
    document = verdict.as_json(plan, traffic())
    assert list(document["policies"]) == ["demo-live", "sim-startup-aware", "sim-keda"]
    for numbers in document["policies"].values():
        for key in ("slo_attainment", "latency_p50", "latency_p95", "latency_p99", "pod_seconds"):
            assert isinstance(numbers[key], float)
        assert numbers["jobs_submitted"] == numbers["jobs_completed"] == 3
    live = document["policies"]["demo-live"]
    assert live["slo_attainment"] == pytest.approx(2 / 3)  # 5 s and 10 s are within 10 s, 20 s is not
    assert live["pod_seconds"] == pytest.approx(70.0)
    assert "startup 35 s" in document["sim_setup"]  # mean of the measured 4 and 3 wall s, scaled back
    assert document["daemon_slo_counters"] is None  # none scraped
    path = tmp_path / "r" / "report.json"
    write_json(path, document)
    assert json.loads(path.read_text())["policies"]["sim-keda"]["jobs_completed"] == 3


def test_jobs_that_never_finished_count_against_the_slo() -> None:
    plan = Plan(speedup=SPEEDUP, max_workers=4)
    jobs = [job(0, 0.0, 0.0), job(1, 1.0, 0.0), job(2, 2.0, 0.0, done=False)]
    verdict = judge(plan, run(jobs))
    live = verdict.as_json(plan, traffic())["policies"]["demo-live"]
    assert (live["jobs_submitted"], live["jobs_completed"]) == (3, 2)
    assert live["slo_attainment"] == pytest.approx(2 / 3)


def test_the_daemons_slo_counters_are_read_off_its_exposition_and_reported() -> None:
    metrics = Metrics()
    for target, latencies in (("demo", (0.5, 1.0, 1.5)), ("other", (9.0,))):
        report = TickReport(target, T0, None, None, False, True, False, None, 0.5)
        metrics.observe_tick(replace(report, latencies=latencies, slo_seconds=1.0))
    exposition = generate_latest(metrics.registry).decode()
    counters = slo_counters(exposition, "demo")
    assert counters == SloCounters(finished=3, within_slo=2) and counters.attainment == pytest.approx(2 / 3)
    assert slo_counters(exposition, "nobody") is None
    assert SloCounters(0, 0).attainment is None
    plan = Plan(speedup=SPEEDUP, max_workers=4)
    jobs = [job(0, 0.0, 0.0), job(1, 1.0, 0.5), job(2, 2.0, 1.5)]
    verdict = judge(plan, replace(run(jobs), counters=counters))
    assert verdict.as_json(plan, traffic())["daemon_slo_counters"] == {"finished": 3, "within_slo": 2}
