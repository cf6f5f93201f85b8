"""The demo's plan: every duration compressed by the same factor, and the trace window it replays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from autoscaler.config import LocalTargetConfig, StreamSourceConfig
from autoscaler.demo.plan import (
    MAX_SPEEDUP,
    MIN_SPEEDUP,
    REFERENCE,
    TIME_KNOBS,
    Plan,
    auto_keep_every,
    peak_demand,
    run_queue,
    select_traffic,
)
from autoscaler.engine.baselines import KedaConfig
from autoscaler.engine.policy import StartupAwareConfig
from experiments.traces import Trace
from jobqueue import validate_queue


def test_every_duration_knob_of_the_startup_aware_policy_is_compressed() -> None:
    """A new ``*_seconds`` knob left out of TIME_KNOBS would run speedup-times too slow live."""
    durations = {name for name in StartupAwareConfig.model_fields if name.endswith("_seconds")}
    assert durations == set(TIME_KNOBS["startup-aware"])


def test_policy_knobs_are_the_current_values_divided_by_the_speedup() -> None:
    knobs = Plan(speedup=10, max_workers=8).policy_knobs()
    defaults = StartupAwareConfig()
    assert knobs["short_window_seconds"] == pytest.approx(defaults.short_window_seconds / 10)
    assert "season_seconds" not in knobs  # unset stays unset
    spec = Plan(speedup=10, max_workers=8, policy="startup-aware:standingPoolWindowSeconds=600")
    assert spec.policy_knobs()["standing_pool_window_seconds"] == pytest.approx(60.0)


def test_every_duration_knob_of_keda_is_compressed() -> None:
    """KEDA's durations are HPA periods, its sync phase and its stabilization window."""
    names = {field.name for field in dataclasses.fields(KedaConfig)}
    durations = {name for name in names if name.endswith(("_period", "_offset", "_stabilization"))}
    assert durations == set(TIME_KNOBS["keda"])


def test_live_keda_runs_on_the_compressed_clock() -> None:
    """--policy keda: a 15 s sync and a 300 s stabilization at 10x are 1.5 and 30 wall seconds."""
    plan = Plan(speedup=10, max_workers=8, policy="keda")
    defaults = KedaConfig()
    assert plan.policy_knobs() == pytest.approx(
        {
            "sync_period": defaults.sync_period / 10,
            "scale_up_period": defaults.scale_up_period / 10,
            "scale_down_period": defaults.scale_down_period / 10,
            "scale_down_stabilization": defaults.scale_down_stabilization / 10,
        }
    )  # sync_offset unset: one tick in, and the tick is compressed too
    tuned = Plan(speedup=10, max_workers=8, policy="keda:listLength=10,syncOffset=5")
    assert tuned.policy_knobs()["sync_offset"] == pytest.approx(0.5)
    (target,) = tuned.app_config("redis://127.0.0.1:6379/0", 0, Path("logs")).targets
    assert target.policy.name == "keda:listLength=10,syncOffset=5"
    assert target.policy.knobs["sync_offset"] == pytest.approx(0.5)


def test_app_config_is_the_reference_workload_compressed(tmp_path: Path) -> None:
    plan = Plan(speedup=20, max_workers=6, queue="demo:run-1")
    config = plan.app_config("redis://127.0.0.1:6379/0", 0, tmp_path)
    (target,) = config.targets
    timings = [
        target.slo_seconds,
        target.startup_seconds,
        target.service_seconds,
        target.tick_seconds,
        target.watch_seconds,
    ]
    assert timings == pytest.approx([0.5, 1.5, 0.25, 0.25, 0.05])
    assert (target.min_replicas, target.max_replicas) == (REFERENCE.min_replicas, 6)
    assert isinstance(target.source, StreamSourceConfig) and target.source.queue == "demo:run-1"
    assert isinstance(target.target, LocalTargetConfig)
    env = target.target.env
    assert (float(env["MODEL_SETUP_SECONDS"]), float(env["MODEL_PREDICT_SECONDS"])) == (1.5, 0.25)
    assert target.policy.knobs == plan.policy_knobs()


def test_the_demo_daemon_saves_no_learned_state_on_the_server(tmp_path: Path) -> None:
    """State would be kept under the target's name ("demo"), not the run's queue: a second run on
    the same REDIS_URL would restore the first's, and a real target named "demo" be overwritten."""
    from autoscaler.state_store import build_state_store

    (target,) = Plan(speedup=10, max_workers=2).app_config("redis://127.0.0.1:6379/0", 0, tmp_path).targets
    assert not target.state.persist
    assert build_state_store(target) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speedup": 0.0, "max_workers": 4}, "speedup"),
        ({"speedup": float("inf"), "max_workers": 4}, "speedup"),
        ({"speedup": 0.01, "max_workers": 4}, "speedup must be within 1/60"),
        ({"speedup": 1e7, "max_workers": 4}, "speedup must be within 1/60"),
        ({"speedup": MAX_SPEEDUP * 1.01, "max_workers": 4}, "speedup must be within 1/60"),
        ({"speedup": 10.0, "max_workers": 0}, "max-workers"),
        ({"speedup": 10.0, "max_workers": 4, "policy": "kpa"}, "policy"),
        ({"speedup": 10.0, "max_workers": 4, "policy": "static:3"}, "policy"),
    ],
)
def test_bad_plans_name_the_option(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("speedup", [MIN_SPEEDUP, MAX_SPEEDUP])
def test_the_speedup_bounds_give_a_config_the_daemon_accepts(speedup: float, tmp_path: Path) -> None:
    (target,) = (
        Plan(speedup=speedup, max_workers=2).app_config("redis://127.0.0.1:6379/0", 0, tmp_path).targets
    )
    assert target.tick_seconds == pytest.approx(REFERENCE.tick_seconds / speedup)


def test_run_queue_is_a_valid_unique_queue_name() -> None:
    queue = run_queue(now=0.0)
    assert validate_queue(queue).startswith("demo:run-19700101-000000-")
    assert run_queue(now=0.0) != queue  # two runs started in the same second still differ


def trace(arrivals: list[float]) -> Trace:
    return Trace("t.csv", np.asarray(arrivals, dtype=np.float64))


def test_peak_demand_is_busy_workers_in_the_busiest_window() -> None:
    burst = [0.0, 1.0, 2.0, 3.0, 100.0]
    assert peak_demand(np.asarray(burst), service=5.0, window=10.0) == pytest.approx(4 * 5 / 10)
    assert peak_demand(np.zeros(0), 5.0, 10.0) == 0.0


def test_window_and_thinning() -> None:
    plan = Plan(speedup=10, max_workers=2)
    arrivals = [float(t) for t in range(100)]  # 1 job/s: 5 busy workers at 5 s each
    traffic = select_traffic(trace(arrivals), plan, start=10, duration=50)
    assert traffic.in_window == 50
    # 5 workers' worth of demand on 2 workers at 80 %: keep every 4th (5 / 1.6 = 3.1 -> 4).
    assert traffic.keep_every == 4 == auto_keep_every(np.arange(50.0), plan)
    assert traffic.arrivals.tolist() == [float(t) for t in range(0, 50, 4)]
    assert "one job in 4 -> 13 jobs" in traffic.describe()
    explicit = select_traffic(trace(arrivals), plan, start=0, duration=100, keep_every=1)
    assert len(explicit) == 100 and "kept every job" in explicit.describe()


def test_an_empty_window_says_where_the_trace_is() -> None:
    with pytest.raises(ValueError, match="no arrivals in trace seconds 500-600"):
        select_traffic(trace([0.0, 1.0]), Plan(10, 4), start=500, duration=100)
    with pytest.raises(ValueError, match="--duration"):
        select_traffic(trace([0.0]), Plan(10, 4), start=0, duration=0)


def test_a_window_past_the_trace_end_is_announced_up_to_the_trace_end() -> None:
    """A 60 s trace replayed with the default 1,200 s window was announced (and reported in the
    JSON's "traffic", and drawn as a progress bar stopping at 5 %) as trace seconds 0-1200."""
    traffic = select_traffic(trace([0.0, 10.0, 59.4]), Plan(10, 4), start=5, duration=1200)
    assert traffic.duration == 55
    assert "trace seconds 5-60:" in traffic.describe()
    inside = select_traffic(trace([0.0, 10.0, 59.4]), Plan(10, 4), start=0, duration=30)
    assert inside.duration == 30
