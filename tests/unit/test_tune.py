"""Tuning: grid replays scored per trace and pooled, the front, and what gets recommended."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from autoscaler.config import ConfigError, parse_config
from autoscaler.engine.registry import Value
from experiments.generators import Poisson, Step, generate
from experiments.replay import Outcome, Prepared, Setup, prepare, run_policy
from experiments.traces import Trace
from experiments.tune import (
    Trial,
    fluid_pool,
    grid_points,
    pareto_front,
    recommend,
    run_grid,
    suggest_floors,
    with_floor_points,
    yaml_snippet,
)


def _prepared(name: str, shape: Poisson | Step, seed: int) -> Prepared:
    arrivals, _ = generate(shape, seed=seed)
    return prepare(Trace(name, arrivals - arrivals[0]), Setup())


@pytest.fixture(scope="module")
def two() -> list[Prepared]:
    return [
        _prepared("steady.csv", Poisson(rate=1.0, duration=600.0), 1),
        _prepared("crowd.csv", Step(base_rate=0.5, step_at=300.0, step_seconds=120.0, duration=900.0), 2),
    ]


def test_several_traces_are_scored_together_and_one_by_one(two: list[Prepared]) -> None:
    points = grid_points({"list_length": [2.0, 20.0]})
    trials = run_grid(two, "keda", points, processes=1)
    assert [t.options for t in trials] == points
    for trial in trials:
        alone = [run_policy(p, "keda", trial.options)[0] for p in two]
        assert [o.slo_attainment for o in trial.per_trace] == [o.slo_attainment for o in alone]
        jobs = [len(p.trace.arrivals) for p in two]
        met = sum(o.slo_attainment * n for o, n in zip(alone, jobs, strict=True))
        assert trial.outcome.slo_attainment == pytest.approx(met / sum(jobs))  # every job once
        pods = sum(o.pod_seconds for o in alone)
        assert trial.outcome.pod_seconds == pytest.approx(pods)
        assert trial.outcome.cost_vs_oracle == pytest.approx(pods / sum(p.oracle for p in two))
        assert trial.outcome.max_replicas == max(o.max_replicas for o in alone)
        assert trial.worst_attainment == min(o.slo_attainment for o in alone)
        assert trial.outcome.policy == f"keda:list_length={trial.options['list_length']:g}"


def test_one_trace_is_scored_as_replay_scores_it(two: list[Prepared]) -> None:
    (trial,) = run_grid(two[0], "keda", [{"list_length": 5.0}], processes=1)
    assert trial.per_trace == (trial.outcome,)
    alone, _ = run_policy(two[0], "keda:listLength=5")
    assert trial.outcome.as_json() | {"policy": ""} == alone.as_json() | {"policy": ""}


def test_forked_workers_give_the_same_trials(two: list[Prepared]) -> None:
    points = grid_points({"list_length": [1.0, 5.0, 20.0]})
    assert run_grid(two, "keda", points, processes=2) == run_grid(two, "keda", points, processes=1)


def _trial(name: float, cost: float, *attainments: float) -> Trial:
    def outcome(attainment: float) -> Outcome:
        return Outcome("p", attainment, 1.0, 2.0, 3.0, cost * 100, cost, 1, 1)

    per_trace = tuple(outcome(a) for a in attainments)
    return Trial({"k": name}, outcome(float(np.mean(attainments))), per_trace)


def test_a_recommendation_meets_the_target_on_every_trace() -> None:
    cheap_uneven = _trial(1, 1.0, 0.999, 0.90)  # pooled 0.9495, but one trace misses 0.95
    dear_even = _trial(2, 1.2, 0.96, 0.96)
    dearer = _trial(3, 1.5, 0.99, 0.99)
    best, met = recommend([cheap_uneven, dear_even, dearer], 0.95)
    assert (best, met) == (dear_even, True)
    best, met = recommend([cheap_uneven, dear_even], 0.97)  # nobody: the best worst trace, flagged
    assert (best, met) == (dear_even, False)
    assert pareto_front([dearer, cheap_uneven, dear_even]) == [cheap_uneven, dear_even, dearer]


def test_the_snippet_names_each_trace_and_parses_as_config(two: list[Prepared]) -> None:
    (trial,) = run_grid(two, "keda", [{"list_length": 5.0}], processes=1)
    text = yaml_snippet("keda", trial, two, 0.5, met=True)
    assert "on steady.csv, crowd.csv: cheapest grid point with SLO attainment >= 0.5 on every trace" in text
    assert "# steady.csv: attainment" in text and "# crowd.csv: attainment" in text
    assert yaml.safe_load(text) == {"policy": {"name": "keda", "list_length": 5.0}}


@pytest.mark.parametrize(
    ("spec", "point", "knobs"),
    [
        # The spec's own options ran in every replay: without them the pasted policy is another one.
        (
            "keda:hpaBehavior=none,syncOffset=0",
            {"list_length": 2.0},
            {"hpa_behavior": "none", "sync_offset": 0.0, "list_length": 2.0},
        ),
        # A grid's 'none' (an optional knob unset) is written as YAML null, which the loader takes.
        (
            "startup-aware:confidence=0.9",
            {"season_seconds": None, "drain_seconds": None},
            {"confidence": 0.9, "season_seconds": None, "drain_seconds": None},
        ),
    ],
)
def test_the_pasted_snippet_builds_the_policy_whose_numbers_it_prints(
    two: list[Prepared], spec: str, point: dict[str, Value], knobs: dict[str, object]
) -> None:
    crowd = two[1]
    (trial,) = run_grid(crowd, spec, [point], processes=1)
    snippet = yaml.safe_load(yaml_snippet(spec, trial, crowd, 0.5, met=True))
    target = {
        "name": "w",
        "source": {"kind": "list", "key": "q"},
        "target": {"kind": "kubernetes", "name": "w"},
    }
    config = parse_config(yaml.safe_dump({"targets": [{**target, "max_replicas": 200, **snippet}]}))
    policy = config.targets[0].policy
    assert policy.knobs == knobs
    pasted, _ = run_policy(crowd, policy.name, policy.knobs)
    assert pasted.as_json() | {"policy": ""} == trial.outcome.as_json() | {"policy": ""}


def test_a_floor_in_the_grid_is_the_workloads_min_replicas(two: list[Prepared]) -> None:
    floors = run_grid(two, "keda", grid_points({"min_replicas": [0, 6], "list_length": [5.0]}), processes=1)
    bare, floored = floors
    for prepared, outcome in zip(two, floored.per_trace, strict=True):
        # The same replay as a workload with that floor from the start: the policy and the sim see it.
        setup = replace(prepared.setup, min_replicas=6)
        alone, result = run_policy(prepare(prepared.trace, setup), "keda", {"list_length": 5.0})
        assert outcome.as_json() | {"policy": ""} == alone.as_json() | {"policy": ""}
        assert result.timeline.replicas.min() >= 6  # from the first tick on, though KEDA's own is 1
    assert bare.per_trace == tuple(
        Outcome(**{**run_policy(p, "keda", {"list_length": 5.0})[0].as_json(), "policy": o.policy})
        for p, o in zip(two, bare.per_trace, strict=True)
    )


def test_a_floor_goes_on_the_target_beside_the_policy(two: list[Prepared]) -> None:
    (trial,) = run_grid(two[0], "keda", [{"list_length": 5.0, "min_replicas": 6}], processes=1)
    text = yaml_snippet("keda", trial, two[0], 0.5, met=True)
    snippet = yaml.safe_load(text)
    assert snippet == {"min_replicas": 6, "policy": {"name": "keda", "list_length": 5.0}}
    assert "replicas 6..200" in text and "its max_replicas must be at least 6" in text
    # Pasted under a target as the comment says, the daemon takes it: the floor is the target's.
    target = {
        "name": "w",
        "source": {"kind": "list", "key": "q"},
        "target": {"kind": "kubernetes", "name": "w"},
    }
    config = parse_config(yaml.safe_dump({"targets": [{**target, "max_replicas": 6, **snippet}]}))
    assert config.targets[0].workload().min_replicas == 6
    with pytest.raises(ConfigError, match="min_replicas"):
        parse_config(yaml.safe_dump({"targets": [{**target, "max_replicas": 5, **snippet}]}))
    # The floor the target already has (the replay's, 0 here) is not repeated as a change to make.
    (same,) = run_grid(two[0], "keda", [{"list_length": 5.0, "min_replicas": 0}], processes=1)
    text = yaml_snippet("keda", same, two[0], 0.5, met=True)
    assert yaml.safe_load(text) == {"policy": {"name": "keda", "list_length": 5.0}}
    assert "min_replicas" not in text and "replicas 0..200" in text


def test_suggested_floors_are_the_fluid_pool_for_the_target_and_ten_percent_either_side() -> None:
    # 40 jobs in the first 2 s of every minute: n pods start 2n of them within the 5 s wait budget
    # (two rounds of 5 s jobs), so 90 % needs about 18-19 pods and 17 fall short.
    arrivals = np.concatenate([m * 60.0 + np.linspace(0.0, 2.0, 40) for m in range(30)])
    prepared = prepare(Trace("minutely.csv", arrivals), Setup(initial_replicas=0))
    pool = fluid_pool(prepared, 0.9)
    assert suggest_floors([prepared], 0.9) == sorted({0, round(pool * 0.9), pool, round(pool * 1.1)})
    assert 17 < pool <= 20

    def static(n: int) -> float:
        setup = Setup(initial_replicas=n)
        return run_policy(prepare(Trace("minutely.csv", arrivals), setup), f"static:{n}")[0].slo_attainment

    assert static(pool) >= 0.9 > static(round(pool * 0.9))
    # A higher target never suggests a smaller pool; several traces give each its own candidates.
    assert fluid_pool(prepared, 0.99) >= pool
    other = prepare(Trace("steady.csv", np.arange(0.0, 600.0, 0.5)), Setup())  # 2 jobs/s, 10 pods busy
    both = suggest_floors([prepared, other], 0.9)
    assert set(suggest_floors([prepared], 0.9)) <= set(both) and 10 <= fluid_pool(other, 0.9) <= 11


def test_the_default_floors_come_with_the_starting_knobs_and_the_learned_pool_on_and_off() -> None:
    grid = grid_points({"confidence": [0.7, 0.8], "standing_pool_window_seconds": [0.0, 3600.0]})
    start = {"confidence": 0.8, "standing_pool_window_seconds": 3600.0}
    points = with_floor_points(grid, start, [0, 1, 54], current=1)
    assert points[:4] == [{**p, "min_replicas": 1} for p in grid]  # the grid at the target's floor
    assert points[4:] == [
        {**start, "min_replicas": 0},
        {**start, "standing_pool_window_seconds": 0.0, "min_replicas": 0},
        {**start, "min_replicas": 54},
        {**start, "standing_pool_window_seconds": 0.0, "min_replicas": 54},
    ]
    # A start with the pool off tries each floor once; a policy with no learned pool, once too.
    off = {**start, "standing_pool_window_seconds": 0.0}
    assert with_floor_points([], off, [54], current=1) == [{**off, "min_replicas": 54}]
    keda = {"list_length": 5.0}
    assert with_floor_points([], keda, [0, 54], current=0) == [{**keda, "min_replicas": 54}]
