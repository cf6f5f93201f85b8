"""What a restart of the autoscaler costs, and what restoring its saved state buys back.

A daemon restarts for ordinary reasons: a rollout, a node drain, a crash, a config change that
rebuilds a target. This replays the scorecard's traces with the default policy replaced, at
one moment, by a new process in one of three ways:

* cold: a fresh policy that knows nothing;
* history: a fresh policy whose forecaster is warmed from the last hour of arrivals (what the
  daemon does when no saved state exists, from the submission times in the completions stream;
  here the true arrival times, which differ only by the jobs unfinished at the restart);
* restored: a fresh policy restored from the old one's saved state, through JSON
  (``autoscaler.engine.state``), which the daemon does when the state is in Redis.

    .venv/bin/python benchmarks/restart.py [--conv-trace PATH] [--out reports/restart.md]

About 30 seconds on two cores.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from autoscaler.engine.policy import StartupAwarePolicy
from experiments.render import benchmark_command, publish, report_header
from experiments.replay import Outcome, Setup, prepare
from experiments.replay import run as replay
from experiments.restart import MODES, RestartedAt
from experiments.scorecard import reference_traces
from experiments.traces import AZURE_CODE_TRACE, Trace, trace_argument

RESTART_TIMES = (900.0, 1800.0, 2700.0)
DIURNAL = "synthetic:diurnal"


Row = tuple[Outcome, int | None]
"""A run's outcome, and the size in bytes of the state saved at its restart (None: no restart)."""


def runs(trace: Trace) -> tuple[Trace, list[Row]]:
    prepared = prepare(trace, Setup())
    rows: list[Row] = [(replay(prepared, StartupAwarePolicy(prepared.workload), "no restart")[0], None)]
    end = float(np.max(trace.arrivals))
    for at in (t for t in RESTART_TIMES if t < end):

        def make() -> StartupAwarePolicy:
            return StartupAwarePolicy(prepared.workload)

        arrivals = prepared.trace.arrivals.tolist()
        for mode in MODES:
            restarted = RestartedAt(make, at, mode, arrivals)
            rows.append((replay(prepared, restarted)[0], restarted.saved_bytes))
    return trace, rows


def render(results: list[tuple[Trace, list[Row]]], command: str) -> str:
    lines = [
        *report_header(
            "Restarting the autoscaler: cold, warmed from history, or restored",
            command,
            f"{Setup().describe()}. Default configuration",
        ),
        "Each row replaces the default policy at one moment by a new process's policy. *Restored*",
        "must equal *no restart* exactly (the test suite checks the same property on generated",
        "traces); the other two show what is lost without the saved state. *Saved state* is the",
        "size of the JSON the old policy would have left in Redis at the restart.",
        "",
        "| trace | run | within SLO | × oracle | change in SLO points | saved state |",
        "|:---|:---|---:|---:|---:|---:|",
    ]
    for trace, rows in results:
        base = rows[0][0].slo_attainment
        for row, saved in rows:
            delta = (row.slo_attainment - base) * 100
            size = "-" if saved is None else f"{saved / 1000:.1f} kB"
            lines.append(
                f"| {trace.name} | {row.policy} | {row.slo_attainment:.2%} | {row.cost_vs_oracle:.3f} "
                f"| {delta:+.2f} | {size} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=AZURE_CODE_TRACE)
    parser.add_argument("--conv-trace", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/restart.md"))
    args = parser.parse_args(argv)
    for option, path in (("--trace", args.trace), ("--conv-trace", args.conv_trace)):
        if path is not None:  # a typo'd path dropped its rows without a word
            trace_argument(parser, option, path)
    # The day-long diurnal trace is left out: a restart in its first hour says nothing new.
    traces = [t for t, _ in reference_traces(args.trace, seed=0, conv=args.conv_trace) if t.name != DIURNAL]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(runs, traces))
    command = benchmark_command("benchmarks/restart.py", argv)
    text = render(results, command)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
