"""The demo's verdict: the live run scored like a replay, beside KEDA and startup-aware replayed on
the very traffic the live run recorded.

Everything is in trace time (the real system's seconds): wall times multiplied by the speedup.

* The live run is read back from Redis the way ``python -m experiments record`` reads any queue
  (server-side ``submitted_at``/``started_at``/``finished_at`` of every job record), and turned into
  the simulator's own result type, so :func:`experiments.replay.score` and the plots treat it
  exactly like a simulated policy. Pod-seconds are worker-process lifetimes from spawn to exit,
  clipped, as in the simulator, to the span from the first arrival to the last completion.
* The replays use the recorded arrivals and per-job service times, and the warm-up the live workers
  actually showed (mean and p90 of spawn-to-Ready), with one warm worker at the start as live.
* The daemon's own SLO counters, scraped off its ``/metrics`` once every job has finished, are shown
  beside the score: what an operator's dashboard would have said about the same run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.demo.monitor import WorkerLife
from autoscaler.demo.plan import Plan, Traffic
from autoscaler.engine.registry import STARTUP_AWARE
from autoscaler.loop import TickReport
from experiments.distributions import MAX_P90_OVER_MEAN
from experiments.record import Recording, recording
from experiments.replay import Outcome, Report, Setup, replay, score
from experiments.sim import SimResult, Timeline
from experiments.traces import Trace
from jobqueue import JobStatus
from jobqueue.records import JobTimes

LIVE = "demo-live"
SIM_POLICIES = (STARTUP_AWARE, "keda")


def sim_label(spec: str) -> str:
    return f"sim-{spec}"


@dataclass(frozen=True, slots=True)
class SloCounters:
    """The daemon's ``autoscaler_jobs_finished_total`` and ``autoscaler_jobs_within_slo_total``."""

    finished: int
    within_slo: int

    @property
    def attainment(self) -> float | None:
        return self.within_slo / self.finished if self.finished else None


def slo_counters(exposition: str, target: str) -> SloCounters | None:
    """The SLO counters of ``target`` in a Prometheus text exposition; None if it has none."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("target") == target:
                values[sample.name] = sample.value
    try:
        finished = values["autoscaler_jobs_finished_total"]
        within = values["autoscaler_jobs_within_slo_total"]
    except KeyError:
        return None
    return SloCounters(round(finished), round(within))


@dataclass(frozen=True, slots=True)
class LiveRun:
    """What the live run left behind (wall epoch seconds, as measured)."""

    jobs: Sequence[JobTimes]
    submitted: int
    rejected: int
    ticks: Sequence[TickReport]
    lives: Sequence[WorkerLife]
    counters: SloCounters | None = None  # the daemon's, after the last job finished


@dataclass(frozen=True, slots=True)
class Verdict:
    """The scored runs (live first) and the numbers the JSON report carries."""

    report: Report
    submitted: int
    completed: int
    rejected: int
    startup_samples: int
    counters: SloCounters | None = None

    @property
    def outcomes(self) -> list[Outcome]:
        return self.report.outcomes

    def as_json(self, plan: Plan, traffic: Traffic) -> dict[str, Any]:
        jobs = len(self.report.prepared.trace)
        policies: dict[str, dict[str, Any]] = {}
        for outcome in self.outcomes:
            live = outcome.policy == LIVE
            policies[outcome.policy] = {
                **outcome.as_json(),
                "jobs_submitted": self.submitted if live else jobs,
                "jobs_completed": self.completed if live else jobs,
            }
        return {
            "policies": policies,
            "live_policy": plan.policy,
            "speedup": plan.speedup,
            "max_workers": plan.max_workers,
            "traffic": traffic.describe(),
            "keep_every": traffic.keep_every,
            "jobs_rejected": self.rejected,
            "daemon_slo_counters": (
                {"finished": self.counters.finished, "within_slo": self.counters.within_slo}
                if self.counters
                else None
            ),
            "oracle_pod_seconds": self.report.prepared.oracle,
            "sim_setup": self.report.prepared.setup.describe(),
            "units": "seconds of trace time (wall seconds x speedup)",
        }


def measured_startup(lives: Sequence[WorkerLife], speedup: float) -> tuple[float | None, float | None, int]:
    """(mean, p90, samples) of spawn-to-Ready in trace seconds; p90 only from 3 samples on."""
    samples = np.array([(w.ready_at - w.created_at) * speedup for w in lives if w.ready_at is not None])
    if len(samples) == 0:
        return None, None, 0
    mean = float(np.mean(samples))
    if len(samples) < 3:
        return mean, None, len(samples)
    p90 = min(max(float(np.percentile(samples, 90)), mean), mean * MAX_P90_OVER_MEAN)
    return mean, p90, len(samples)


def _timeline(ticks: Sequence[TickReport], origin: float, end: float, speedup: float) -> Timeline:
    rows = [
        ((r.now - origin) * speedup, r.snapshot)
        for r in ticks
        if r.snapshot is not None and 0 <= (r.now - origin) * speedup <= end
    ]
    return Timeline(
        times=np.array([t for t, _ in rows], dtype=np.float64),
        replicas=np.array([s.ready + s.starting for _, s in rows], dtype=np.int64),
        ready=np.array([s.ready for _, s in rows], dtype=np.int64),
        waiting=np.array([s.waiting for _, s in rows], dtype=np.int64),
        in_flight=np.array([s.in_flight for _, s in rows], dtype=np.int64),
    )


def live_result(run: LiveRun, origin: float, speedup: float) -> SimResult:
    """The live run as the simulator's result type: jobs that succeeded, workers, ticks."""
    done = sorted((j for j in run.jobs if j.status is JobStatus.SUCCEEDED), key=lambda j: j.submitted_at)
    if not done:
        raise ValueError("no job ran to completion")

    def trace_times(values: Sequence[float | None]) -> np.ndarray:
        return (np.array(values, dtype=np.float64) - origin) * speedup

    arrivals = trace_times([j.submitted_at for j in done])
    start = trace_times([j.started_at for j in done])
    finish = trace_times([j.finished_at for j in done])
    end = float(np.max(finish))
    created = np.clip(trace_times([w.created_at for w in run.lives]), 0.0, end)
    exits = np.clip(trace_times([w.exited_at or np.inf for w in run.lives]), 0.0, end)
    timeline = _timeline(run.ticks, origin, end, speedup)
    acted = [r for r in run.ticks if r.acted and 0 <= (r.now - origin) * speedup <= end]
    return SimResult(
        policy=LIVE,
        arrivals=arrivals,
        service=finish - start,
        start=start,
        end=end,
        pod_created=created,
        pod_exit=exits,
        scale_events=len(acted),
        max_replicas=int(np.max(timeline.replicas)) if len(timeline.replicas) else 0,
        completions_reported=len(done),
        timeline=timeline,
    )


def sim_setup(plan: Plan, run: LiveRun, recorded: Recording) -> tuple[Setup, int]:
    """The simulated cluster that matches the live one; also how many startups were measured."""
    w = plan.workload
    mean, p90, samples = measured_startup(run.lives, plan.speedup)
    setup = Setup(
        startup=mean if mean is not None else w.startup_seconds,
        startup_p90=p90,
        service="trace" if recorded.service is not None else w.service_seconds,
        slo=w.slo_seconds,
        tick=w.tick_seconds,
        watch=w.watch_seconds,
        slots=w.slots_per_pod,
        initial_replicas=max(1, w.min_replicas),
        min_replicas=w.min_replicas,
        max_replicas=plan.max_workers,
    )
    return setup, samples


def judge(plan: Plan, run: LiveRun) -> Verdict:
    """Score the live run and replay its recorded traffic under the simulated policies."""
    recorded = recording(run.jobs, plan.queue, plan.speedup)
    if not len(recorded):
        raise ValueError("no job was recorded")
    setup, samples = sim_setup(plan, run, recorded)
    trace = Trace("demo-recorded", recorded.arrivals, recorded.service)
    simulated = replay(trace, setup, SIM_POLICIES)
    live = live_result(run, recorded.origin, plan.speedup)
    live_outcome = score(LIVE, live, setup.slo, simulated.prepared.oracle)
    completed = len(live.arrivals)
    # Jobs that never finished count against the SLO: attainment is over what was submitted.
    share = completed / run.submitted if run.submitted else 0.0
    live_outcome = replace(live_outcome, slo_attainment=live_outcome.slo_attainment * share)
    report = Report(
        simulated.prepared,
        outcomes=[
            live_outcome,
            *(replace(o, policy=sim_label(o.policy)) for o in simulated.outcomes),
        ],
        results=[live, *simulated.results],
    )
    return Verdict(report, run.submitted, completed, run.rejected, samples, run.counters)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
