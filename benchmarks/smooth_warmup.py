"""Where the smooth row's late jobs are, against the warm-up bound at the first and second look.

The scorecard's smooth trace (Poisson 5 jobs/s for an hour, the first job at t = 0 with one warm
pod) has a target of >= 99.3 % within SLO, and its *best possible* (``warmup_bound``) is 99.302 %:
126 jobs late. That bound gives the policy every pod at its first look at the first job, and the
first look at t = 0 coincides with it: a policy that has seen one job has no rate to act on. This
script prints the default policy's late jobs split into the warm-up and the rest, beside the bound
with the first look where the first job is, and where the second one is.

    .venv/bin/python benchmarks/smooth_warmup.py [--seed 0]

About two seconds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.engine.snapshot import Decision, Snapshot
from autoscaler.engine.target import WorkloadSpec
from experiments.keda_sweep import synthetic_trace
from experiments.replay import Prepared, Setup, prepare, run
from experiments.scorecard import best_possible

WARM_UP_SECONDS = 60.0
"""Late jobs that arrived before this are the first warm-up's; every later one is the policy's."""


def excursion_rate(arrivals: np.ndarray, late: np.ndarray, seconds: float = 45.0) -> float | None:
    """Jobs per second over the ``seconds`` before the last late job (None: none late)."""
    if late.size == 0:
        return None
    end = float(late.max())
    return round(int(np.count_nonzero((arrivals > end - seconds) & (arrivals <= end))) / seconds, 2)


def bound_late(prepared: Prepared, evidence_jobs: int) -> int:
    """Jobs late at best when the policy gets its pods at the first look after ``evidence_jobs`` jobs."""
    return round((1.0 - best_possible(prepared, evidence_jobs)) * len(prepared.trace))


class FirstOrders:
    """The default policy, noting each count it orders (a tick's or the watch's) before ``until``."""

    def __init__(self, workload: WorkloadSpec, until: float) -> None:
        self.policy, self.until = StartupAwarePolicy(workload), until
        self.orders: list[tuple[float, int]] = []

    @property
    def name(self) -> str:
        return self.policy.name

    def _note(self, now: float, decision: Decision | None) -> Decision | None:
        if (
            decision is not None
            and now < self.until
            and (not self.orders or self.orders[-1][1] != decision.desired)
        ):
            self.orders.append((now, decision.desired))
        return decision

    def decide(self, snapshot: Snapshot) -> Decision:
        decision = self.policy.decide(snapshot)
        self._note(snapshot.now, decision)
        return decision

    def surge(self, snapshot: Snapshot) -> Decision | None:
        return self._note(snapshot.now, self.policy.surge(snapshot))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="the scorecard's smooth trace is seed 0")
    args = parser.parse_args()
    trace, _ = synthetic_trace("smooth", args.seed)
    prepared = prepare(trace, Setup())
    policy = FirstOrders(prepared.workload, until=2 * prepared.setup.tick)
    outcome, result = run(prepared, policy, "startup-aware")
    late = result.latency > prepared.setup.slo + 1e-9
    early = result.arrivals < WARM_UP_SECONDS
    later_late = result.arrivals[late & ~early]
    report = {
        "jobs": len(trace),
        "slo_attainment": round(outcome.slo_attainment, 5),
        "cost_vs_oracle": round(outcome.cost_vs_oracle, 3),
        "late_in_warm_up": int(np.count_nonzero(late & early)),
        "late_after_warm_up": int(later_late.size),
        "late_after_warm_up_at_s": sorted({int(t) for t in later_late}),
        "last_late_warm_up_arrival_s": round(float(result.arrivals[late & early].max()), 2),
        "orders_in_first_two_ticks": [[t, n] for t, n in policy.orders],
        "jobs_by_1s": int(np.count_nonzero(trace.arrivals <= 1.0)),
        "rate_in_45s_before_last_late": excursion_rate(trace.arrivals, later_late),
        "bound_late_first_look_at_first_job": bound_late(prepared, 1),
        "bound_late_first_look_at_second_job": bound_late(prepared, 2),
        "target_allows_late": int(len(trace) * (1 - 0.993)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
