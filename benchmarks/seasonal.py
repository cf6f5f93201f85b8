"""Traffic on a clock: what finding (or configuring) its period buys.

Batch pipelines and cron jobs submit bursts on a clock: 30 s of jobs every five minutes, say.
Such a burst is over within one warm-up, so nothing reactive serves it, and the learned standing
pool serves it only by keeping pods warm through every quiet minute. With a season, the
seasonal profile orders the pods one warm-up ahead of each burst. The default configuration
looks for the period itself (``autoscaler.engine.period``; it needs three cycles); it can also
be configured (``season_seconds``). This replays such traces, and smooth swings for contrast,
four ways: the period search off, the default, the period configured, and the period configured
with the standing pool off. The last hour shows each once settled: by then the standing pool has
forgotten the bursts it saw before a season was found (its window is an hour).

Real clocks are loosely kept: the last cases start each burst up to 15 s or 30 s late (uniform,
drawn per burst), which smears the seasonal profile and tests the probation that retires the pool.

    .venv/bin/python benchmarks/seasonal.py [--out reports/seasonal.md]

About three minutes on two cores.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from experiments.generators import Diurnal, OnOff, Shape, generate
from experiments.render import benchmark_command, publish, report_header
from experiments.replay import Setup, prepare, run_policy
from experiments.traces import Trace

FOUR_HOURS = 14400.0
EVERY_5_MIN = OnOff(on_seconds=30.0, off_seconds=270.0, duration=FOUR_HOURS)
EVERY_10_MIN = OnOff(on_seconds=30.0, off_seconds=570.0, duration=FOUR_HOURS)
MINUTE_EVERY_10_MIN = OnOff(on_seconds=60.0, off_seconds=540.0, duration=FOUR_HOURS)
# (name, shape, period, jitter): each burst of an OnOff shape starts up to ``jitter`` s late.
CASES: tuple[tuple[str, Shape, float, float], ...] = (
    ("30 s at 10 jobs/s every 5 min", EVERY_5_MIN, 300.0, 0.0),
    ("30 s at 10 jobs/s every 10 min", EVERY_10_MIN, 600.0, 0.0),
    ("60 s at 10 jobs/s every 10 min", MINUTE_EVERY_10_MIN, 600.0, 0.0),
    ("sine 5 jobs/s ±80 %, 30 min period", Diurnal(period=1800.0, duration=FOUR_HOURS), 1800.0, 0.0),
    ("sine 5 jobs/s ±80 %, 2 h period", Diurnal(period=7200.0, duration=28800.0), 7200.0, 0.0),
    ("30 s every 5 min, each up to 15 s late", EVERY_5_MIN, 300.0, 15.0),
    ("30 s every 10 min, each up to 30 s late", EVERY_10_MIN, 600.0, 30.0),
)
# Knob overrides per run; a None value stands for the trace's period.
CONFIGS: tuple[tuple[str, dict[str, float | None]], ...] = (
    ("no season (search off)", {"season_detect_max_seconds": 0.0}),
    ("default (searches for a period)", {}),
    ("season configured", {"season_seconds": None}),
    ("season, no standing pool", {"season_seconds": None, "standing_pool_window_seconds": 0.0}),
)


def loose_clock(shape: OnOff, jitter: float, seed: int = 0) -> np.ndarray:
    """``shape``'s bursts, each started late by its own uniform draw in [0, ``jitter``) seconds."""
    rng = np.random.default_rng(seed)
    period = shape.on_seconds + shape.off_seconds
    starts = np.arange(0.0, shape.duration, period)
    starts = starts + rng.uniform(0.0, jitter, len(starts))
    bursts = [
        s + rng.uniform(0.0, shape.on_seconds, rng.poisson(shape.rate * shape.on_seconds)) for s in starts
    ]
    return np.sort(np.concatenate(bursts))


def runs(case: tuple[str, Shape, float, float]) -> list[str]:
    name, shape, season, jitter = case
    if jitter > 0:
        assert isinstance(shape, OnOff)
        arrivals = loose_clock(shape, jitter)
    else:
        arrivals, _ = generate(shape, seed=0)
    prepared = prepare(Trace(name, arrivals - arrivals[0]), Setup())
    end = float(prepared.trace.arrivals.max())
    hours = end / 3600.0
    last = prepared.trace.arrivals >= end - 3600.0
    rows = []
    for label, options in CONFIGS:
        knobs = {k: season if v is None else v for k, v in options.items()}
        outcome, result = run_policy(prepared, "startup-aware", knobs)
        late = float(np.mean(result.latency[last] <= prepared.setup.slo))
        # Pods alive on average over the last hour: what the configuration costs once settled.
        alive = np.clip(result.pod_exit, end - 3600.0, end) - np.clip(result.pod_created, end - 3600.0, end)
        rows.append(
            f"| {name}, {hours:.0f} h | {label} | {outcome.slo_attainment:.1%} | "
            f"{outcome.cost_vs_oracle:.2f} | {late:.1%} | {alive.sum() / 3600.0:.1f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/seasonal.md"))
    args = parser.parse_args(argv)
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = [row for case in pool.map(runs, CASES) for row in case]
    lines = [
        *report_header(
            "Periodic traffic: configuring the season",
            benchmark_command("benchmarks/seasonal.py", argv),
            f"{Setup().describe()}. `season_seconds` set to each trace's period where named",
        ),
        "",
        "| trace | configuration | within SLO | × oracle | last hour: within SLO | last hour: mean pods |",
        "|:---|:---|---:|---:|---:|---:|",
        *rows,
    ]
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
