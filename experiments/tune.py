"""Grid search of a policy's knobs on a trace: the cost-vs-SLO Pareto front and a recommendation.

Each grid point is one full replay, independent of the others, so the grid runs in a small process
pool (forked, so the prepared trace is shared rather than pickled per task).
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import yaml

from autoscaler.engine.registry import Value, format_option
from experiments.replay import Outcome, Prepared, run_policy

Point = dict[str, Value]

_WORKER: tuple[Prepared, str] | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    """One grid point and how the policy did with it."""

    options: Point
    outcome: Outcome


def grid_points(grid: Mapping[str, Sequence[Value]]) -> list[Point]:
    """Every combination of the grid's values, in a stable order."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _label(spec: str, point: Point) -> str:
    options = ",".join(f"{k}={format_option(v)}" for k, v in point.items())
    return f"{spec}{',' if ':' in spec else ':'}{options}" if options else spec


def _init_worker(prepared: Prepared, spec: str) -> None:
    global _WORKER
    _WORKER = (prepared, spec)


def _run_point(point: Point) -> Trial:
    assert _WORKER is not None, "worker not initialised"
    prepared, spec = _WORKER
    outcome, _ = run_policy(prepared, spec, point)
    return Trial(point, Outcome(**{**outcome.as_json(), "policy": _label(spec, point)}))


def run_grid(
    prepared: Prepared,
    spec: str,
    points: Sequence[Point],
    processes: int = 2,
    on_result: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Replay ``prepared`` once per point (``spec`` with the point's options), in grid order."""
    trials: list[Trial] = []
    if processes <= 1 or len(points) <= 1:
        _init_worker(prepared, spec)
        results = map(_run_point, points)
        for trial in results:
            trials.append(trial)
            if on_result:
                on_result(trial)
        return trials
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_init_worker, initargs=(prepared, spec)) as pool:
        for trial in pool.imap(_run_point, points):
            trials.append(trial)
            if on_result:
                on_result(trial)
    return trials


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """Trials no other beats on both cost and attainment, cheapest first."""
    ordered = sorted(trials, key=lambda t: (t.outcome.cost_vs_oracle, -t.outcome.slo_attainment))
    front: list[Trial] = []
    for trial in ordered:
        if not front or trial.outcome.slo_attainment > front[-1].outcome.slo_attainment:
            front.append(trial)
    return front


def recommend(trials: Sequence[Trial], target: float) -> tuple[Trial, bool]:
    """The cheapest trial meeting ``target`` attainment, else the best-attaining one (and False)."""
    meeting = [t for t in trials if t.outcome.slo_attainment >= target]
    if meeting:
        return min(meeting, key=lambda t: t.outcome.cost_vs_oracle), True
    best = max(trials, key=lambda t: (t.outcome.slo_attainment, -t.outcome.cost_vs_oracle))
    return best, False


def yaml_snippet(spec: str, trial: Trial, prepared: Prepared, target: float, met: bool) -> str:
    """A config fragment for the recommended knobs, with where it came from as comments."""
    o = trial.outcome
    why = (
        f"cheapest grid point with SLO attainment >= {target:g}"
        if met
        else f"no grid point reached {target:g}; this one attains the most"
    )
    name = spec.partition(":")[0]
    header = [
        f"# experiments tune on {prepared.trace.name}: {why}",
        f"# attainment {o.slo_attainment:.4f}, {o.cost_vs_oracle:.2f}x oracle pod-seconds, "
        f"p99 latency {o.latency_p99:.1f} s",
        f"# workload: {prepared.setup.describe()}",
    ]
    header.append("# paste under the target in the autoscaler ConfigMap (autoscaler/config.py)")
    body = yaml.safe_dump({"policy": {"name": name, **trial.options}}, sort_keys=False)
    return "\n".join(header) + "\n" + body
