"""The default startup-aware policy on variants of the target workloads it was not tuned on.

The issue's targets are checked on traces we do not have, so this sweeps the generators around
the scorecard's shapes (Poisson rates from 0.5 to 20 jobs/s, diurnal means and swings, ramp and
flash-crowd seeds, bases, lengths and factors) with the default configuration and reports each
against its target and against the best any online policy can do (the first warm-up bound).

    .venv/bin/python benchmarks/robustness.py [--policy SPEC ...] [--only TEXT] [--out reports/robustness.md]

About 30 s on two cores per policy. ``--policy`` (repeatable) puts candidate
configurations side by side on the same variants, e.g. ``--policy startup-aware --policy
startup-aware:drain_seconds=5``, each with its own verdicts and count of targets met; the default
is the default policy alone. ``--only flash`` keeps the variants whose name contains "flash".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from experiments.generators import Diurnal, Poisson, Ramp, Shape, Step, generate
from experiments.render import benchmark_command, check_policy_specs, publish, report_header
from experiments.replay import Setup
from experiments.scorecard import Row, Target, score_traces
from experiments.traces import Trace

SMOOTH = Target(0.995, 0.95)
STARTS_BUSY = Target(0.993, 0.95)  # one hour that starts busy: the first warm-up weighs
RAMP = Target(0.98, 1.0)
FLASH = Target(0.88, 1.2)

Variant = tuple[str, Shape, int, Target]
"""A workload: its name in the report, the generator's shape, the seed, the target it is held to."""

VARIANTS: list[Variant] = [
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


def score(variant: Variant, policies: Sequence[str]) -> Row:
    name, shape, seed, _ = variant
    arrivals, _ = generate(shape, seed=seed)
    return score_traces([(Trace(name, arrivals - arrivals[0]), name)], Setup(), policies)[0]


def render(variants: Sequence[Variant], rows: Sequence[Row], policies: Sequence[str], command: str) -> str:
    """The report: a row per variant, a result and a verdict per policy, and the count of targets met."""
    lines = [
        *report_header(
            "Robustness: the default policy on variants of the target workloads",
            command,
            f"{Setup().describe()}. Default configuration, no per-trace tuning",
        ),
        "*Best possible* is `experiments.oracle.warmup_bound` (the first warm-up, and the pod cap).",
        "A target counts as met when attainment reaches the lower of the target and the best possible.",
        "",
        "| workload | seed | target | best possible | " + " | ".join(f"{p} | met" for p in policies) + " |",
        "|:---|---:|:---|---:|" + "---:|:---:|" * len(policies),
    ]
    met = [0] * len(policies)
    for (name, _, seed, target), row in zip(variants, rows, strict=True):
        cells = []
        for i, outcome in enumerate(row.outcomes):
            ok = target.met(outcome, 1.0 if row.bound is None else row.bound)
            met[i] += ok
            verdict = "yes" if ok else "**no**"
            cells.append(f"{outcome.slo_attainment:.2%} at {outcome.cost_vs_oracle:.3f}x | {verdict}")
        aim = f">= {target.attainment:.1%} at <= {target.cost:g}x"
        lines.append(f"| {name} | {seed} | {aim} | {row.best_possible(2)} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{p} {m} of {len(rows)}" for p, m in zip(policies, met, strict=True))
    return "\n".join([*lines, "", f"Targets met: {counts}."]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/robustness.md"))
    parser.add_argument(
        "--policy",
        action="append",
        metavar="SPEC",
        help="a policy to score, as the replay CLI takes it (repeatable; default: startup-aware)",
    )
    parser.add_argument(
        "--only",
        metavar="TEXT",
        help="score only the variants whose name contains TEXT (e.g. 'flash'), for a quick look",
    )
    args = parser.parse_args(argv)
    policies = tuple(args.policy or ["startup-aware"])
    check_policy_specs(parser, policies)
    variants = [v for v in VARIANTS if args.only is None or args.only in v[0]]
    if not variants:
        parser.error(f"--only {args.only}: no variant's name contains it")
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(partial(score, policies=policies), variants))
    command = benchmark_command("benchmarks/robustness.py", argv)
    publish(render(variants, rows, policies, command), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
