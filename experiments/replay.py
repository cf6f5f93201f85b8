"""Replay one trace under several policies and score them against the oracle.

The score of a policy is a point on the cost-versus-SLO plane: the share of jobs whose latency
(arrival to completion) is within the SLO, and its pod-seconds divided by the zero-wait oracle's.
``replay``, ``tune`` and ``keda-sweep`` all go through :func:`run_policy`, so they agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.engine.registry import Value, make_policy
from autoscaler.engine.snapshot import Policy
from autoscaler.engine.target import WorkloadSpec
from experiments.distributions import duration
from experiments.oracle import oracle_pod_seconds
from experiments.sim import ProgressFn, SimConfig, SimResult, simulate
from experiments.traces import Trace, TraceError

SERVICE_FROM_TRACE = "trace"


@dataclass(frozen=True, slots=True)
class Setup:
    """The simulated workload and cluster, as the CLI options describe them.

    ``service`` is seconds per job, or ``"trace"`` for the trace's own ``service_s`` column. The
    policies are told the startup p90 when one is given (what an operator would configure as
    "warm-up takes up to"), and the mean service time of the replayed jobs.
    """

    startup: float = 30.0
    startup_p90: float | None = None
    service: float | str = 5.0
    service_p90: float | None = None
    slo: float = 10.0
    tick: float = 5.0
    watch: float = 1.0
    slots: int = 1
    initial_replicas: int = 1
    min_replicas: int = 0
    max_replicas: int = 200
    seed: int = 0

    def service_times(self, trace: Trace) -> np.ndarray:
        if self.service == SERVICE_FROM_TRACE:
            if trace.service is None:
                raise TraceError(f"{trace.name}: no service_s column, so --service trace cannot be used")
            return trace.service
        spread = duration(float(self.service), self.service_p90)
        # A seed of its own, so per-job service draws do not depend on how many pods were started.
        return spread.draw(np.random.default_rng([self.seed, 1]), len(trace))

    def workload(self, service: np.ndarray) -> WorkloadSpec:
        return WorkloadSpec(
            slo_seconds=self.slo,
            startup_seconds=self.startup_p90 if self.startup_p90 is not None else self.startup,
            service_seconds=max(float(np.mean(service)), 1e-6),
            slots_per_pod=self.slots,
            tick_seconds=self.tick,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            watch_seconds=self.watch,
        )

    def nominal_workload(self) -> WorkloadSpec:
        """The workload before a trace is read (a service time taken from the trace counts as 1 s)."""
        mean = 1.0 if self.service == SERVICE_FROM_TRACE else float(self.service)
        return self.workload(np.full(1, mean))

    def describe(self) -> str:
        startup = f"{self.startup:g} s" + (f" (p90 {self.startup_p90:g} s)" if self.startup_p90 else "")
        service = "from the trace" if self.service == SERVICE_FROM_TRACE else f"{self.service} s"
        if self.service_p90:
            service += f" (p90 {self.service_p90:g} s)"
        return (
            f"startup {startup}, service {service}, SLO {self.slo:g} s, tick {self.tick:g} s, "
            f"watch {self.watch:g} s, "
            f"{self.slots} slot(s)/pod, {self.initial_replicas} initial pod(s), "
            f"replicas {self.min_replicas}..{self.max_replicas}, seed {self.seed}"
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A trace with everything every policy's run shares: service draws, workload, oracle cost."""

    trace: Trace
    setup: Setup
    service: np.ndarray
    workload: WorkloadSpec
    sim: SimConfig
    oracle: float


def prepare(trace: Trace, setup: Setup) -> Prepared:
    service = setup.service_times(trace)
    workload = setup.workload(service)
    sim = SimConfig(
        workload=workload,
        startup=duration(setup.startup, setup.startup_p90),
        initial_replicas=setup.initial_replicas,
        seed=setup.seed,
    )
    oracle = oracle_pod_seconds(trace.arrivals, service, setup.slots, setup.startup)
    return Prepared(trace, setup, service, workload, sim, oracle)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One policy's point on the cost-versus-SLO plane (the JSON ``policies`` entries)."""

    policy: str
    slo_attainment: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    pod_seconds: float
    cost_vs_oracle: float
    scale_events: int
    max_replicas: int

    def as_json(self) -> dict[str, Any]:
        """The CLI's JSON record; a number that is not finite (a ratio to an oracle of 0) is null,
        since bare ``NaN`` is not JSON and strict parsers refuse the whole document."""
        return {
            "policy": self.policy,
            "slo_attainment": self.slo_attainment,
            "latency_p50": self.latency_p50,
            "latency_p95": self.latency_p95,
            "latency_p99": self.latency_p99,
            "pod_seconds": self.pod_seconds,
            "cost_vs_oracle": self.cost_vs_oracle if math.isfinite(self.cost_vs_oracle) else None,
            "scale_events": self.scale_events,
            "max_replicas": self.max_replicas,
        }


def score(label: str, result: SimResult, slo: float, oracle: float) -> Outcome:
    """One run's point on the cost-versus-SLO plane."""
    return pooled_score(label, [result], slo, [oracle])


def score_part(
    label: str, result: SimResult, slo: float, oracle: float, *, first_job: int, since: float
) -> Outcome:
    """A run's later part on the cost-versus-SLO plane: jobs from ``first_job``, pods billed from ``since``.

    For traffic replayed after a lead-in of other traffic (a policy in steady operation), the
    lead-in's jobs and the pod-seconds before ``since`` are not the part's. ``oracle`` is the
    part's own. Scale events and the peak are read off the per-tick timeline from ``since`` (a
    change of the replica count between two ticks is one event): the run's totals include the
    lead-in.
    """
    if not 0 <= first_job < len(result.arrivals):
        raise ValueError(
            f"first_job must index a job of the run (0..{len(result.arrivals) - 1}), got {first_job}"
        )
    pod_seconds = float(np.sum(np.maximum(0.0, result.pod_exit - np.maximum(result.pod_created, since))))
    replicas = result.timeline.replicas[result.timeline.times >= since]
    return _outcome(
        label,
        result.latency[first_job:],
        slo,
        pod_seconds,
        oracle,
        scale_events=int(np.count_nonzero(np.diff(replicas))),
        max_replicas=int(replicas.max()) if len(replicas) else 0,
    )


def pooled_score(label: str, results: Sequence[SimResult], slo: float, oracles: Sequence[float]) -> Outcome:
    """Several runs (one per trace) scored as one: every job counts once, cost over the summed oracle.

    Attainment and latency percentiles are over all jobs of all runs together, so a long trace
    weighs more than a short one, as it does on the bill.
    """
    return _outcome(
        label,
        np.concatenate([r.latency for r in results]),
        slo,
        sum(r.pod_seconds for r in results),
        sum(oracles),
        scale_events=sum(r.scale_events for r in results),
        max_replicas=max(r.max_replicas for r in results),
    )


def _outcome(
    label: str,
    latency: np.ndarray,
    slo: float,
    pod_seconds: float,
    oracle: float,
    *,
    scale_events: int,
    max_replicas: int,
) -> Outcome:
    """The point on the plane for jobs with these latencies and this bill, against ``oracle``."""
    p50, p95, p99 = (float(x) for x in np.percentile(latency, [50, 95, 99]))
    return Outcome(
        policy=label,
        slo_attainment=float(np.mean(latency <= slo)),
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
        pod_seconds=pod_seconds,
        cost_vs_oracle=pod_seconds / oracle if oracle > 0 else float("nan"),
        scale_events=scale_events,
        max_replicas=max_replicas,
    )


def run_policy(
    prepared: Prepared,
    spec: str,
    overrides: Mapping[str, Value] | None = None,
    progress: ProgressFn | None = None,
) -> tuple[Outcome, SimResult]:
    """Replay ``prepared`` under the policy ``spec`` names (``ValueError`` if it names none)."""
    policy = make_policy(spec, prepared.workload, **(overrides or {}))
    return run(prepared, policy, spec, progress)


def run(
    prepared: Prepared, policy: Policy, label: str | None = None, progress: ProgressFn | None = None
) -> tuple[Outcome, SimResult]:
    """Replay ``prepared`` under a policy object (one no spec can name, too), scored as ``label``."""
    result = simulate(prepared.trace.arrivals, prepared.service, policy, prepared.sim, progress)
    return score(label or policy.name, result, prepared.setup.slo, prepared.oracle), result


@dataclass(slots=True)
class Report:
    """A replay of one trace: the JSON document of ``replay --json``, plus the raw runs for plots."""

    prepared: Prepared
    outcomes: list[Outcome] = field(default_factory=list)
    results: list[SimResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "trace": self.prepared.trace.name,
            "jobs": len(self.prepared.trace),
            "oracle_pod_seconds": self.prepared.oracle,
            "policies": [o.as_json() for o in self.outcomes],
        }


def replay(
    trace: Trace,
    setup: Setup,
    specs: Sequence[str],
    progress_for: Callable[[str], ProgressFn | None] = lambda _spec: None,
) -> Report:
    """Run every policy in ``specs`` on ``trace``; ``progress_for`` may hand each run a callback."""
    report = Report(prepare(trace, setup))
    for spec in specs:  # a typo in the last spec should not cost the runs before it
        make_policy(spec, report.prepared.workload)
    for spec in specs:
        outcome, result = run_policy(report.prepared, spec, progress=progress_for(spec))
        report.outcomes.append(outcome)
        report.results.append(result)
    return report
