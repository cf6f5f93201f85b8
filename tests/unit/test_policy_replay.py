"""The startup-aware policy end to end in the simulator: behaviours an operator relies on."""

import numpy as np

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.target import WorkloadSpec
from experiments.sim import SimConfig, simulate


def bursts(count: int, every: float, size: int, within: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    starts = np.arange(count) * every + 60.0
    return np.sort(np.concatenate([s + rng.uniform(0, within, size) for s in starts]))


def replay(arrivals: np.ndarray, config: StartupAwareConfig) -> tuple[float, float, np.ndarray]:
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload, config)
    result = simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(workload=workload))
    return float(np.mean(result.latency <= 10.0)), result.pod_seconds, result.timeline.replicas


def test_recurring_bursts_earn_a_standing_pool_that_serves_their_onsets() -> None:
    arrivals = bursts(count=12, every=150.0, size=150, within=15.0)  # 10 jobs/s for 15 s, 2.5 min apart
    with_pool = replay(arrivals, StartupAwareConfig())
    without = replay(arrivals, StartupAwareConfig(standing_pool_window_seconds=0))
    assert with_pool[0] > without[0] + 0.3  # onsets are served from warm pods
    assert with_pool[0] >= 0.85
    # Between the last bursts the pool stays up instead of dropping to zero.
    assert with_pool[2][-40:].min() >= 30 and without[2][-40:].min() <= 10


def test_a_load_reactive_scaling_handles_gets_no_standing_pool() -> None:
    rng = np.random.default_rng(5)
    arrivals = np.sort(rng.uniform(0, 1800, 9000))  # smooth 5 jobs/s
    with_pool = replay(arrivals, StartupAwareConfig())
    without = replay(arrivals, StartupAwareConfig(standing_pool_window_seconds=0))
    assert with_pool[1] <= without[1] * 1.01
