"""Grid search of a policy's knobs on traces: the cost-vs-SLO Pareto front and a recommendation.

Each grid point is one full replay per trace, independent of the others, so the grid runs in a
small process pool (forked, so the prepared traces are shared rather than pickled per task).
Several traces (days of the same workload, say) are scored together: every job counts once and the
cost is over their summed oracle; a recommendation must meet the target on each trace alone, since
one configuration will serve all of them.

Besides the policy's knobs, the search covers the pool's floor, the target's ``min_replicas``
(:data:`FLOOR`). On traffic as bursty as the Azure code trace, where most bursts are over before a
pod ordered at their onset is ready, a fixed floor does work no policy knob can: the learned
standing pool follows the bursts seen so far, and a floor chosen on a recorded day holds from the
first second. By default the floors the traces suggest (:func:`suggest_floors`) are tried with the
starting knobs (:func:`with_floor_points`); a grid that names the floor crosses its values with
every knob instead, and ``auto`` among them stands for the suggested ones.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import yaml

from autoscaler.engine.registry import Value, format_option, spec_options
from autoscaler.engine.standing_pool import FluidWindow, smallest_enough
from experiments.replay import Outcome, Prepared, pooled_score, run_policy

Point = dict[str, Value]

FLOOR = "min_replicas"
"""The one workload knob a grid may hold: the pool's floor, set on the target, not the policy."""

_WORKER: tuple[Sequence[Prepared], str] | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    """One grid point and how the policy did with it: on all traces together, and on each."""

    options: Point
    outcome: Outcome
    per_trace: tuple[Outcome, ...]

    @property
    def worst_attainment(self) -> float:
        return min(o.slo_attainment for o in self.per_trace)


def grid_points(grid: Mapping[str, Sequence[Value]]) -> list[Point]:
    """Every combination of the grid's values, in a stable order."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _label(spec: str, point: Point) -> str:
    options = ",".join(f"{k}={format_option(v)}" for k, v in point.items())
    return f"{spec}{',' if ':' in spec else ':'}{options}" if options else spec


def _init_worker(prepared: Sequence[Prepared], spec: str) -> None:
    global _WORKER
    _WORKER = (prepared, spec)


def with_floor(prepared: Prepared, floor: int) -> Prepared:
    """``prepared`` with the workload's ``min_replicas`` set to ``floor`` (the policy's and the sim's)."""
    workload = replace(prepared.workload, min_replicas=floor)
    return replace(
        prepared,
        setup=replace(prepared.setup, min_replicas=floor),
        workload=workload,
        sim=replace(prepared.sim, workload=workload),
    )


def suggest_floors(prepared: Sequence[Prepared], target: float) -> list[int]:
    """Floors worth replaying: the fluid model's pool for ``target`` on each trace, and 10 % either side.

    The pool is the smallest fixed one that meets ``target`` of a trace's jobs with nothing else
    serving: its arrivals per control tick through the fluid FIFO queue the learned standing pool
    uses (:class:`~autoscaler.engine.standing_pool.FluidWindow`). On bursty traffic it is close to
    the best static pool (54 on the Azure code trace at 85 %, where ``static:54`` replays at
    85.3 %); on smooth traffic it is the whole load, which the replays then show to cost more than
    scaling does. The floor 0 is always among them, so the grid keeps the no-floor configuration.
    """
    floors = {0}
    for p in prepared:
        pool = fluid_pool(p, target)
        floors |= {min(round(pool * share), p.workload.max_replicas) for share in (0.9, 1.0, 1.1)}
    return sorted(floors)


def fluid_pool(prepared: Prepared, target: float) -> int:
    """The smallest fixed pool that starts ``target`` of the trace's jobs in time, in the fluid model."""
    workload, tick = prepared.workload, prepared.setup.tick
    ticks = np.floor(prepared.trace.arrivals / tick).astype(np.int64)
    counts = np.bincount(ticks - ticks[0]).astype(np.float64)
    window = FluidWindow(np.column_stack((counts, np.full(len(counts), tick), np.zeros(len(counts)))))
    service, slots = workload.service_seconds, workload.slots_per_pod
    wait = max(0.0, workload.slo_seconds - service)
    return smallest_enough(
        lambda n: window.attainment(n, slots, service, wait) >= target, workload.max_replicas, 0
    )


POOL_WINDOW = "standing_pool_window_seconds"
"""The learned pool's window: a floor is tried with the pool on (the starting value) and off (0)."""


def with_floor_points(
    points: Sequence[Point], start: Mapping[str, Value], floors: Sequence[int], current: int
) -> list[Point]:
    """``points`` at the ``current`` floor, then ``start`` at each other of ``floors``.

    What the default search adds to a policy's knobs. On traffic whose bursts end before a warm-up
    does the floor is the lever (on the Azure code trace a floor of 54 with the learned pool off
    meets 85 % at 1.37x, which no setting of the knobs does at that cost), yet users who do not know
    their traffic is such would not think to ask for it. Each suggested floor is tried with the
    starting knobs, with the learned pool on and off, rather than crossed with the whole grid: that
    would replay the grid once per floor. ``--grid min_replicas=...`` crosses them when wanted.
    """
    base = [{**point, FLOOR: current} for point in points]
    pools: list[Point] = [{}]  # the learned pool as the start has it, and off
    if POOL_WINDOW in start:
        pools = [{}, {POOL_WINDOW: 0.0}]
    extra: list[Point] = []
    for floor in floors:
        for pool in pools:
            point = {**start, **pool, FLOOR: floor}
            if floor != current and point not in extra:
                extra.append(point)
    return base + extra


def split_point(point: Point) -> tuple[int | None, Point]:
    """A grid point as (its floor, or None when the grid does not search it; the policy's options)."""
    options = dict(point)
    floor = options.pop(FLOOR, None)
    return (None if floor is None else int(floor)), options


def _run_point(point: Point) -> Trial:
    assert _WORKER is not None, "worker not initialised"
    prepared, spec = _WORKER
    label = _label(spec, point)
    floor, options = split_point(point)
    if floor is not None:
        prepared = [with_floor(p, floor) for p in prepared]
    runs = [run_policy(p, spec, options) for p in prepared]
    per_trace = tuple(Outcome(**{**outcome.as_json(), "policy": label}) for outcome, _ in runs)
    if len(runs) == 1:
        return Trial(point, per_trace[0], per_trace)
    slo = prepared[0].setup.slo
    pooled = pooled_score(label, [result for _, result in runs], slo, [p.oracle for p in prepared])
    return Trial(point, pooled, per_trace)


def run_grid(
    prepared: Prepared | Sequence[Prepared],
    spec: str,
    points: Sequence[Point],
    processes: int = 2,
    on_result: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Replay the prepared trace(s) once per point (``spec`` with its options), in grid order."""
    if isinstance(prepared, Prepared):
        prepared = [prepared]
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
    """The cheapest trial meeting ``target`` attainment on every trace, else the one whose worst
    trace attains the most (and False)."""
    meeting = [t for t in trials if t.worst_attainment >= target]
    if meeting:
        return min(meeting, key=lambda t: t.outcome.cost_vs_oracle), True
    best = max(trials, key=lambda t: (t.worst_attainment, -t.outcome.cost_vs_oracle))
    return best, False


def yaml_snippet(
    spec: str, trial: Trial, prepared: Prepared | Sequence[Prepared], target: float, met: bool
) -> str:
    """A config fragment for the recommended knobs, with where it came from as comments."""
    traces = [prepared] if isinstance(prepared, Prepared) else list(prepared)
    every = " on every trace" if len(traces) > 1 else ""
    why = (
        f"cheapest grid point with SLO attainment >= {target:g}{every}"
        if met
        else f"no grid point reached {target:g}{every}; this one's worst trace attains the most"
    )
    name = spec.partition(":")[0]
    floor, options = split_point(trial.options)
    setup = traces[0].setup if floor is None else replace(traces[0].setup, min_replicas=floor)
    header = [
        f"# experiments tune on {', '.join(p.trace.name for p in traces)}: {why}",
        *(
            f"# {label}attainment {o.slo_attainment:.4f}, {o.cost_vs_oracle:.2f}x oracle pod-seconds, "
            f"p99 latency {o.latency_p99:.1f} s"
            for label, o in _scored(trial, traces)
        ),
        f"# workload: {setup.describe()}",
    ]
    header.append("# paste under the target in the autoscaler ConfigMap (autoscaler/config.py)")
    document: dict[str, object] = {}
    if floor is not None and floor != traces[0].setup.min_replicas:  # the floor one has stays unsaid
        header.append(f"# {FLOOR} is the target's own field: its max_replicas must be at least {floor}")
        document[FLOOR] = floor
    # The spec's own options too: the replays ran with them, and a snippet without them is
    # another policy (``keda:hpaBehavior=none`` pasted as plain ``keda``).
    document["policy"] = {"name": name, **spec_options(spec), **options}
    body = yaml.safe_dump(document, sort_keys=False)
    return "\n".join(header) + "\n" + body


def _scored(trial: Trial, traces: Sequence[Prepared]) -> list[tuple[str, Outcome]]:
    """The trial's outcome, then each trace's (labelled) when there are several."""
    if len(traces) == 1:
        return [("", trial.outcome)]
    each = [(f"{p.trace.name}: ", o) for p, o in zip(traces, trial.per_trace, strict=True)]
    return [("all traces: ", trial.outcome), *each]
