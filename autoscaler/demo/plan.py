"""What the demo runs: the reference workload compressed in time, and the slice of a trace it replays.

Time compression is exact only if *every* duration shrinks by the same factor: the model's warm-up
and service time, the control tick, the SLO, the policy's own windows (a 300 s KEDA stabilization
left at 300 wall seconds would be 3,000 trace seconds at ``--speedup 10``). :class:`Plan` owns that
scaling, so the live run is the reference system played faster, and its numbers scale back by
multiplying with the speedup.

A 2-core machine cannot run the 80+ workers the Azure trace's bursts ask for at full rate, so the
trace is thinned: every k-th job is kept, which keeps the shape (bursts, idle minutes) and divides
the rate by k. The default k is the smallest that lets ``max_workers`` serve the busiest
startup-long window at 80 % utilization; the report states it.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.config import ALLOW_LOCAL_TARGETS, AppConfig
from autoscaler.engine.registry import STARTUP_AWARE, make_policy, parse_spec
from autoscaler.engine.target import WorkloadSpec
from experiments.traces import Trace

REFERENCE = WorkloadSpec(
    slo_seconds=10.0, startup_seconds=30.0, service_seconds=5.0, tick_seconds=5.0, min_replicas=1
)
"""The reference workload in real seconds (README.md, "How it compares with KEDA"): 30 s warm-up,
5 s per job, SLO 10 s."""

TIME_KNOBS: dict[str, tuple[str, ...]] = {
    STARTUP_AWARE: (
        "drain_seconds",
        "short_window_seconds",
        "long_window_seconds",
        "season_seconds",
        "season_detect_max_seconds",
        "standing_pool_window_seconds",
        "steady_window_seconds",
        "holt_reference_seconds",
    ),
    "keda": (
        "sync_period",
        "sync_offset",
        "scale_up_period",
        "scale_down_period",
        "scale_down_stabilization",
    ),
}
"""Per live policy, the knobs that are durations in seconds: divided by the speedup in the live run.

``keda`` runs KEDA's Redis scaler and HPA arithmetic (:class:`~autoscaler.engine.baselines.KedaPolicy`)
in the same daemon, so ``--policy keda`` puts the baseline through the very stack the startup-aware
run uses: its 15 s sync becomes 1.5 wall seconds at 10x, its 300 s stabilization 30.
"""

PLAN_UTILIZATION = 0.8
"""Thinning leaves the busiest window needing at most this share of ``max_workers``."""

MIN_SPEEDUP = 1 / 60
"""Slower than this, the daemon's 5 s tick would exceed the 300 s its config allows."""

MAX_SPEEDUP = 50.0
"""Faster than this, the live numbers stop meaning anything: measured on the 2-core development
machine (a 300 s Poisson trace at 0.5 jobs/s, 4 workers), the live run within SLO was 77 % beside the
startup-aware replay's 79 % at 50x, but 21 % beside 44 % at 100x (a worker's ~1 s of wall time to
start Python is 100 s of trace time there), and at 1e7 the daemon never started a worker at all."""

MIN_HEARTBEAT_WALL = 0.2
"""Worker heartbeats (busy/idle for the scale-down choice) at most this often: CPU on 2 cores."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The live run's settings; every ``*_wall`` value is in wall-clock seconds."""

    speedup: float
    max_workers: int
    policy: str = STARTUP_AWARE
    queue: str = "demo:v1"
    workload: WorkloadSpec = REFERENCE

    def __post_init__(self) -> None:
        if not (self.speedup > 0 and math.isfinite(self.speedup)):
            raise ValueError(f"--speedup must be a number > 0, got {self.speedup}")
        if not MIN_SPEEDUP <= self.speedup <= MAX_SPEEDUP:
            raise ValueError(
                f"--speedup must be within 1/60 (the daemon's 5 s tick stretched to its 300 s limit) and "
                f"{MAX_SPEEDUP:g} (above it, a worker's start-up and the daemon's own overhead swamp the "
                f"compressed times), got {self.speedup:g}"
            )
        if self.max_workers < max(1, self.workload.min_replicas):
            raise ValueError(f"--max-workers must be >= {max(1, self.workload.min_replicas)}")
        if parse_spec(self.policy)[0] not in TIME_KNOBS:
            raise ValueError(f"--policy {self.policy!r}: the live run supports {', '.join(TIME_KNOBS)}")

    def wall(self, seconds: float) -> float:
        return seconds / self.speedup

    @property
    def target_name(self) -> str:
        return "demo"

    def worker_env(self) -> dict[str, str]:
        """The reference model's timings, compressed; heartbeats and polls fast enough to match."""
        w = self.workload
        heartbeat = max(MIN_HEARTBEAT_WALL, self.wall(1.0))
        return {
            "MODEL_SETUP_SECONDS": f"{self.wall(w.startup_seconds):g}",
            "MODEL_PREDICT_SECONDS": f"{self.wall(w.service_seconds):g}",
            "HEARTBEAT_SECONDS": f"{heartbeat:g}",
            # How long a worker blocks waiting for a job: also how late a drained idle one exits.
            "POLL_SECONDS": f"{max(0.1, min(0.5, self.wall(2.0))):g}",
            "LOG_LEVEL": "WARNING",
        }

    def policy_knobs(self) -> dict[str, float]:
        """The policy's duration knobs (its current defaults or the spec's values), compressed."""
        name = parse_spec(self.policy)[0]
        config = getattr(make_policy(self.policy, self.workload), "config", None)
        knobs: dict[str, float] = {}
        for knob in TIME_KNOBS[name]:
            value = getattr(config, knob, None)
            if isinstance(value, int | float):
                knobs[knob] = self.wall(float(value))
        return knobs

    def app_config(self, redis_url: str, metrics_port: int, log_dir: Path) -> AppConfig:
        """The daemon's config: one target, the demo queue's stream, local worker processes."""
        w = self.workload
        target: dict[str, Any] = {
            "name": self.target_name,
            "source": {
                "kind": "stream",
                "queue": self.queue,
                "redis_url": redis_url,
                "warm_start_seconds": 0,  # a fresh queue: no history to warm the forecaster with
            },
            "target": {
                "kind": "local",
                "env": self.worker_env(),
                "termination_grace_seconds": max(5.0, 4 * self.wall(w.service_seconds)),
                "log_dir": str(log_dir),
            },
            "min_replicas": w.min_replicas,
            "max_replicas": self.max_workers,
            "slo_seconds": self.wall(w.slo_seconds),
            "startup_seconds": self.wall(w.startup_seconds),
            "service_seconds": self.wall(w.service_seconds),
            "tick_seconds": self.wall(w.tick_seconds),
            "watch_seconds": self.wall(w.watch_seconds),
            "policy": {"name": self.policy, **self.policy_knobs()},
            # Nothing saved under the target's name on a shared REDIS_URL: every run starts cold,
            # as its replays do, and a real target named "demo" there keeps its own state.
            "state": {"persist": False},
        }
        return AppConfig.model_validate(
            {"host": "127.0.0.1", "port": metrics_port, "log_level": "WARNING", "targets": [target]},
            context={ALLOW_LOCAL_TARGETS: True},  # the demo's own workers, from its own plan
        )


def run_queue(now: float | None = None) -> str:
    """A queue of its own per run, so a shared REDIS_URL never mixes two runs' jobs."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"demo:run-{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class Traffic:
    """The jobs the demo submits: a thinned window of a trace, times in trace seconds from its start."""

    trace_name: str
    start: float
    duration: float
    in_window: int
    keep_every: int
    arrivals: np.ndarray

    def __len__(self) -> int:
        return len(self.arrivals)

    def describe(self) -> str:
        end = self.start + self.duration
        kept = "every job" if self.keep_every == 1 else f"one job in {self.keep_every}"
        return (
            f"{self.trace_name}, trace seconds {self.start:g}-{end:g}: {self.in_window:,} arrivals, "
            f"kept {kept} -> {len(self):,} jobs"
        )


def peak_demand(arrivals: np.ndarray, service: float, window: float) -> float:
    """Busy workers needed on average over the busiest ``window``-long stretch of ``arrivals``."""
    if len(arrivals) == 0:
        return 0.0
    ends = np.searchsorted(arrivals, arrivals + window, side="left")
    most = int(np.max(ends - np.arange(len(arrivals))))
    return most * service / window


def auto_keep_every(arrivals: np.ndarray, plan: Plan) -> int:
    """The smallest k such that every k-th job fits ``max_workers`` in the busiest warm-up window."""
    w = plan.workload
    demand = peak_demand(arrivals, w.service_seconds, max(w.startup_seconds, w.tick_seconds))
    return max(1, math.ceil(demand / (PLAN_UTILIZATION * plan.max_workers)))


def select_traffic(
    trace: Trace, plan: Plan, start: float, duration: float, keep_every: int | None = None
) -> Traffic:
    """The window ``[start, start + duration)`` of ``trace``, thinned to every ``keep_every``-th job."""
    if duration <= 0:
        raise ValueError(f"--duration must be > 0, got {duration}")
    if keep_every is not None and keep_every < 1:
        raise ValueError(f"--keep-every must be >= 1, got {keep_every}")
    window = trace.arrivals[(trace.arrivals >= start) & (trace.arrivals < start + duration)] - start
    if len(window) == 0:
        raise ValueError(
            f"{trace.name} has no arrivals in trace seconds {start:g}-{start + duration:g} "
            f"(it spans 0-{trace.span:.0f}): choose another --start or --duration"
        )
    k = keep_every or auto_keep_every(window, plan)
    # A window running past the trace's last arrival replays only up to it: say so (the whole
    # second of the last arrival), not the window asked for.
    duration = min(duration, math.floor(trace.span) + 1 - start)
    return Traffic(trace.name, start, duration, len(window), k, window[::k])
