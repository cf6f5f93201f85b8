"""Median wall time of one startup-aware decision, on a realistic 200-pod snapshot.

Budget: <= 1 ms median per decision, excluding forecaster refits. Ticks where an amortised
refit ran (the seasonal Holt-Winters fit, or the standing pool's what-if refresh every 30 s) are
reported separately, so both numbers are visible. Also timed: the watch's answer to a burst
between ticks (``surge``), which runs the tick's rule on a copy of everything learned so far.

    .venv/bin/python benchmarks/decision_latency.py [--ticks 5000] [--pods 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.snapshot import PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    workload = WorkloadSpec(max_replicas=args.pods)
    policy = StartupAwarePolicy(workload, StartupAwareConfig(season_seconds=86400.0))
    pods = tuple(
        PodView(f"pod-{i}", PodPhase.READY if i % 10 else PodPhase.STARTING, float(i), busy_slots=i % 2)
        for i in range(args.pods)
    )
    plain: list[float] = []
    refits: list[float] = []
    for tick in range(args.ticks):
        now = 5.0 * (tick + 1)
        arrivals = int(rng.poisson(5.0 * (20 + 10 * np.sin(now / 600))))
        snap = Snapshot(
            now=now,
            waiting=int(rng.integers(0, 50)),
            in_flight=args.pods // 2,
            arrivals=arrivals,
            interval=5.0,
            current_replicas=args.pods,
            pods=pods,
            service_times=tuple(rng.normal(5.0, 0.3, 20)),
            startup_times=(30.0,) if tick % 20 == 0 else (),
        )
        refits_before = policy.refits
        t0 = time.perf_counter()
        policy.decide(snap)
        elapsed = time.perf_counter() - t0
        (refits if policy.refits != refits_before else plain).append(elapsed)
    # A burst one second after the last tick: 300 jobs queued, 400 arrived, no pod ready for them.
    burst = Snapshot(now + 1.0, 300, args.pods // 2, 400, 1.0, args.pods // 2, pods[: args.pods // 2])
    surges: list[float] = []
    for _ in range(50):
        t0 = time.perf_counter()
        answer = policy.surge(burst)
        surges.append(time.perf_counter() - t0)
        assert answer is not None, "the burst must be answered"
    result = {
        "ticks": args.ticks,
        "pods": args.pods,
        "median_ms_excluding_refits": round(1000 * statistics.median(plain), 3),
        "p99_ms_excluding_refits": round(1000 * float(np.percentile(plain, 99)), 3),
        "refit_ticks": len(refits),
        "median_ms_refit_ticks": round(1000 * statistics.median(refits), 3) if refits else None,
        "median_ms_all": round(1000 * statistics.median(plain + refits), 3),
        "median_ms_surge_answer": round(1000 * statistics.median(surges), 3),
        "within_budget": statistics.median(plain) <= 0.001,
        "machine": f"{platform.machine()}, CPython {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
