"""The default startup-aware policy on variants of the target workloads it was not tuned on.

The issue's targets are checked on traces we do not have, so this sweeps the generators around
the scorecard's shapes (Poisson rates from 0.5 to 20 jobs/s, diurnal means and swings, ramp and
flash-crowd seeds, bases, lengths and factors) with the default configuration and reports each
against its target and against the best any online policy can do (the first warm-up bound).

    .venv/bin/python benchmarks/robustness.py [--out reports/robustness.md]

About a minute on two cores.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from experiments.generators import Diurnal, Poisson, Ramp, Shape, Step, generate
from experiments.render import report_header
from experiments.replay import Setup
from experiments.scorecard import Row, Target, score_traces
from experiments.traces import Trace

SMOOTH = Target(0.995, 0.95)
STARTS_BUSY = Target(0.993, 0.95)  # one hour that starts busy: the first warm-up weighs
RAMP = Target(0.98, 1.0)
FLASH = Target(0.88, 1.2)

VARIANTS: list[tuple[str, Shape, int, Target]] = [
    *[
        (f"Poisson {r:g}/s, 1 h", Poisson(rate=r, duration=3600.0), 0, STARTS_BUSY)
        for r in (0.5, 1, 2, 10, 20)
    ],
    *[(f"Poisson {r:g}/s, 6 h", Poisson(rate=r, duration=21600.0), 0, SMOOTH) for r in (0.2, 0.5, 1, 2, 10)],
    *[
        (f"diurnal {m:g}/s ±{a:.0%}, 24 h", Diurnal(mean_rate=m, amplitude=a, duration=86400.0), 0, SMOOTH)
        for m, a in ((2, 0.8), (20, 0.8), (5, 0.5), (5, 0.95))
    ],
    ("diurnal 5/s ±80 %, 2 h period, 4 h", Diurnal(period=7200.0, duration=14400.0), 0, SMOOTH),
    *[(f"ramp 0.5 -> 15/s in 10 min, seed {s}", Ramp(), s, RAMP) for s in (1, 2, 3)],
    *[
        (f"ramp 0.5 -> 15/s from t = 0, 10 min trace, seed {s}", Ramp(ramp_at=0.0, duration=600.0), s, RAMP)
        for s in (0, 1, 2, 3)
    ],
    ("ramp 0.5 -> 15/s in 5 min", Ramp(ramp_seconds=300.0), 0, RAMP),
    ("ramp 1 -> 30/s in 10 min", Ramp(start_rate=1.0, end_rate=30.0), 0, RAMP),
    *[(f"flash 1 -> 10/s for 5 min, seed {s}", Step(), s, FLASH) for s in (1, 2, 3, 4)],
    ("flash 0.5 -> 5/s", Step(base_rate=0.5), 0, FLASH),
    ("flash 2 -> 20/s", Step(base_rate=2.0), 0, FLASH),
    ("flash 1 -> 5/s", Step(factor=5.0), 0, FLASH),
    ("flash 1 -> 10/s for 15 min", Step(step_seconds=900.0), 0, FLASH),
    ("flash 3 -> 30/s", Step(base_rate=3.0), 0, FLASH),
    ("flash 1 -> 10/s for 3 min", Step(step_seconds=180.0), 0, FLASH),
    ("flash 1 -> 10/s for 2 min", Step(step_seconds=120.0), 0, FLASH),
    ("flash 1 -> 10/s for 1 min", Step(step_seconds=60.0), 0, FLASH),
]


def score(variant: tuple[str, Shape, int, Target]) -> Row:
    name, shape, seed, _ = variant
    arrivals, _ = generate(shape, seed=seed)
    return score_traces([(Trace(name, arrivals - arrivals[0]), name)], Setup(), ["startup-aware"])[0]


def render(rows: list[Row], command: str) -> str:
    lines = [
        *report_header(
            "Robustness: the default policy on variants of the target workloads",
            command,
            f"{Setup().describe()}. Default configuration, no per-trace tuning",
        ),
        "*Best possible* is `experiments.oracle.warmup_bound` (the first warm-up, and the pod cap).",
        "A target counts as met when attainment reaches the lower of the target and the best possible.",
        "",
        "| workload | seed | target | startup-aware | best possible | met |",
        "|:---|---:|:---|---:|---:|:---:|",
    ]
    for (name, _, seed, target), row in zip(VARIANTS, rows, strict=True):
        outcome = row.outcomes[0]
        met = target.met(outcome, row.bound)
        lines.append(
            f"| {name} | {seed} | >= {target.attainment:.1%} at <= {target.cost:g}x | "
            f"{outcome.slo_attainment:.2%} at {outcome.cost_vs_oracle:.3f}x | {row.bound:.2%} | "
            f"{'yes' if met else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/robustness.md")
    args = parser.parse_args()
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(score, VARIANTS))
    text = render(rows, "python benchmarks/robustness.py")
    Path(args.out).write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
