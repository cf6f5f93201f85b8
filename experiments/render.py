"""One column layout for policy outcomes, rendered as a terminal table or as Markdown.

Also the header every committed Markdown report starts with, so each says how to regenerate it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from rich.table import Table

from autoscaler.engine.registry import PolicySpecError, make_policy
from experiments.replay import Outcome, Setup

Row = TypeVar("Row")
Column = tuple[str, Callable[[Row], str]]

POLICY: Column[Outcome] = ("policy", lambda o: o.policy)
METRICS: tuple[Column[Outcome], ...] = (
    ("within SLO", lambda o: f"{o.slo_attainment:.1%}"),
    ("p50 s", lambda o: f"{o.latency_p50:.1f}"),
    ("p95 s", lambda o: f"{o.latency_p95:.1f}"),
    ("p99 s", lambda o: f"{o.latency_p99:.1f}"),
    ("pod-seconds", lambda o: f"{o.pod_seconds:,.0f}"),
    ("× oracle", lambda o: f"{o.cost_vs_oracle:.2f}"),
    ("scale events", lambda o: str(o.scale_events)),
    ("max replicas", lambda o: str(o.max_replicas)),
)
COLUMNS: tuple[Column[Outcome], ...] = (POLICY, *METRICS)


def rich_table(rows: Sequence[Row], title: str, columns: Sequence[Column[Row]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, (header, _) in enumerate(columns):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def markdown_table(rows: Sequence[Row], columns: Sequence[Column[Row]]) -> str:
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def invocation() -> str:
    """The command line this process was started with, as a user would type it."""
    return "python -m experiments " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def report_header(title: str, command: str, workload: str) -> list[str]:
    """Title, date and machine, the command that regenerates the report, and the workload."""
    return [
        f"# {title}",
        "",
        f"Generated {dt.date.today().isoformat()} on {platform.machine()}, "
        f"Python {platform.python_version()}, by:",
        "",
        f"    {command}",
        "",
        f"Workload: {workload}.",
    ]


def benchmark_command(script: str, argv: list[str] | None) -> str:
    """How a benchmark script was run, for its report's header: ``python benchmarks/x.py --flag``."""
    return " ".join(shlex.quote(a) for a in ["python", script, *(sys.argv[1:] if argv is None else argv)])


def check_policy_specs(parser: argparse.ArgumentParser, specs: Sequence[str]) -> None:
    """Exit through ``parser`` (status 2), naming the ``--policy`` spec no policy accepts.

    Benchmark scripts replay in worker processes: a typo found there would surface after minutes
    of replays, and as a traceback. Checked first, it costs one policy built per spec.
    """
    for spec in specs:
        try:
            make_policy(spec, Setup().nominal_workload())
        except PolicySpecError as exc:
            parser.error(f"--policy {spec}: {exc}")


def publish(text: str, out: Path) -> None:
    """Write a report (creating its folder) and echo it, as every benchmark script does."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
