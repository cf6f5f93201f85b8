"""The default policy on workloads unlike the reference: warm-ups of minutes, long jobs, many slots.

The defaults were tuned on the issue's workload (30 s warm-ups, 5 s jobs, a 10 s SLO, one slot a
pod). Platform teams run others: models that load for two to five minutes, jobs of a minute, pods
serving sixteen requests at once. This replays such workloads with the default configuration
beside KEDA's defaults and a fixed pool sized for the load (started warm, as the policy's own
initial pods are), so where the policy stands against the simple answers is one table. The cases
are those a review found far from the fixed pool (session 44); ``tests/unit/test_long_warmups.py``
holds the policy to the fixes.

    .venv/bin/python benchmarks/other_workloads.py [--only TEXT] [--out reports/other_workloads.md]

About 15 s on two cores.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from experiments.generators import Diurnal, Poisson, Shape, Step, generate
from experiments.render import benchmark_command, publish, report_header
from experiments.replay import Outcome, Setup, prepare, run_policy
from experiments.traces import Trace


@dataclass(frozen=True)
class Case:
    """A workload: the traffic, the simulated cluster, and the fixed pool to compare with."""

    name: str
    shape: Shape
    setup: Setup
    static: int
    policies: tuple[str, ...] = field(default=("startup-aware", "keda"))

    def specs(self) -> tuple[str, ...]:
        return (*self.policies, f"static:{self.static}")


CASES = [
    Case(
        "2 jobs/s, a 60 s lull; 120 s warm-up",
        Step(base_rate=2.0, factor=0.02, step_at=1500.0, step_seconds=60.0, duration=2400.0),
        Setup(startup=120.0, initial_replicas=12),
        14,
    ),
    Case(
        "Poisson 0.5/s, 20 s jobs, SLO 30 s; 120 s warm-up",
        Poisson(rate=0.5, duration=7200.0),
        Setup(startup=120.0, service=20.0, slo=30.0, initial_replicas=14),
        14,
    ),
    Case(
        "Poisson 2/s, 10 s jobs, SLO 15 s; 120 s warm-up",
        Poisson(rate=2.0, duration=7200.0),
        Setup(startup=120.0, service=10.0, slo=15.0, initial_replicas=24),
        24,
    ),
    Case(
        "Poisson 2/s, reference jobs; 300 s warm-up",
        Poisson(rate=2.0, duration=7200.0),
        Setup(startup=300.0, initial_replicas=13),
        13,
    ),
    Case(
        "Poisson 0.2/s, 30 s jobs, SLO 300 s; 60 s warm-up",
        Poisson(rate=0.2, duration=7200.0),
        Setup(startup=60.0, service=30.0, slo=300.0, initial_replicas=7),
        7,
    ),
    Case(
        "Poisson 0.05/s, 60 s jobs, SLO 61 s",
        Poisson(rate=0.05, duration=7200.0),
        Setup(service=60.0, slo=61.0, initial_replicas=9),
        9,
    ),
    Case(
        "2/s ±80 % over 30 min, SLO 50 s; 300 s warm-up",
        Diurnal(mean_rate=2.0, amplitude=0.8, period=1800.0, duration=3600.0),
        Setup(startup=300.0, slo=50.0, initial_replicas=10),
        21,
    ),
    Case(
        "50/s ±80 % over 30 min, 0.2 s jobs, 16 slots, SLO 1.2 s; 300 s warm-up",
        Diurnal(mean_rate=50.0, amplitude=0.8, period=1800.0, duration=3600.0),
        Setup(startup=300.0, service=0.2, slo=1.2, slots=16),
        2,
    ),
]


def score(case: Case) -> list[Outcome]:
    arrivals, _ = generate(case.shape, seed=0)
    prepared = prepare(Trace(case.name, arrivals - arrivals[0]), case.setup)
    return [run_policy(prepared, spec)[0] for spec in case.specs()]


def cell(outcome: Outcome) -> str:
    return f"{outcome.slo_attainment:.2%} at {outcome.cost_vs_oracle:.2f}x, {outcome.max_replicas} max"


def render(cases: list[Case], rows: list[list[Outcome]], command: str) -> str:
    lines = [
        *report_header(
            "Workloads unlike the reference: the default policy, KEDA and a fixed pool",
            command,
            "Default configuration for every workload; seed 0; the warm-up, jobs, SLO and slots "
            "as each row says (otherwise 30 s, 5 s, 10 s, 1)",
        ),
        "Each cell: share of jobs within the SLO, pod-seconds over the zero-wait oracle's, most",
        "replicas at once. The fixed pool is sized for the load and starts warm; the other two",
        "start from the same initial pods.",
        "",
        "| workload | startup-aware | KEDA defaults | fixed pool |",
        "|:---|---:|---:|---:|",
    ]
    for case, outcomes in zip(cases, rows, strict=True):
        policy, keda, static = outcomes
        lines.append(f"| {case.name} | {cell(policy)} | {cell(keda)} | {cell(static)} ({case.static} pods) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/other_workloads.md"))
    parser.add_argument("--only", metavar="TEXT", help="only the workloads whose name contains TEXT")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.only is None or args.only in c.name]
    if not cases:
        parser.error(f"--only {args.only}: no workload's name contains it")
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(score, cases))
    publish(render(cases, rows, benchmark_command("benchmarks/other_workloads.py", argv)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
