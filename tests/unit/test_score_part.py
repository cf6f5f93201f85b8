"""``experiments.replay.score_part``: scoring the later part of a replay (steady operation)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from experiments.generators import OnOff, Poisson, generate
from experiments.oracle import oracle_pod_seconds
from experiments.replay import Outcome, Setup, prepare, run_policy, score, score_part
from experiments.traces import Trace

LEAD_IN = 3600.0


def trace(name: str, arrivals: np.ndarray) -> Trace:
    return Trace(name, arrivals - arrivals[0])


def test_a_static_pool_after_a_lead_in_scores_as_the_same_pool_warm_from_the_start() -> None:
    """By the part's start every pod of ``static:8`` is warm and the lead-in's queue is long gone,
    so the part is the deterministic FIFO result of eight warm pods on its jobs alone, billed
    eight pods from its start to its end."""
    lead = trace("lead", generate(Poisson(rate=0.5, duration=1500.0), seed=1)[0])
    part = trace("part", generate(OnOff(duration=900.0), seed=2)[0])
    both = Trace("both", np.concatenate([lead.arrivals, part.arrivals + LEAD_IN]))
    prepared = prepare(both, Setup())
    oracle = oracle_pod_seconds(part.arrivals, prepared.service[len(lead) :], 1, 30.0)
    _, result = run_policy(prepared, "static:8")
    assert result.finish[: len(lead)].max() < LEAD_IN
    later = score_part("static:8", result, 10.0, oracle, first_job=len(lead), since=LEAD_IN)

    alone, alone_result = run_policy(prepare(part, Setup(initial_replicas=8)), "static:8")
    assert later.slo_attainment == alone.slo_attainment
    assert (later.latency_p50, later.latency_p95, later.latency_p99) == pytest.approx(
        (alone.latency_p50, alone.latency_p95, alone.latency_p99)
    )
    assert later.pod_seconds == pytest.approx(8 * (result.end - LEAD_IN))
    assert later.pod_seconds == pytest.approx(alone.pod_seconds)
    assert later.cost_vs_oracle == pytest.approx(later.pod_seconds / oracle)
    assert later.max_replicas == 8 and later.scale_events == 0
    assert 0.0 < later.slo_attainment < 1.0  # a pool that is sometimes short: the FIFO order shows
    assert alone_result.end == pytest.approx(result.end - LEAD_IN)


def test_from_the_first_job_and_time_zero_it_is_the_whole_run() -> None:
    arrivals = generate(OnOff(duration=900.0), seed=5)[0]
    prepared = prepare(trace("bursts", arrivals), Setup())
    outcome, result = run_policy(prepared, "startup-aware")
    whole = score_part("startup-aware", result, 10.0, prepared.oracle, first_job=0, since=0.0)
    expected = score("startup-aware", result, 10.0, prepared.oracle)
    assert outcome == expected
    counts = {"policy", "scale_events", "max_replicas"}  # labels, and totals read another way
    for name in (f.name for f in fields(Outcome) if f.name not in counts):
        assert getattr(whole, name) == pytest.approx(getattr(expected, name)), name
    assert whole.max_replicas <= expected.max_replicas


def test_pods_are_billed_only_for_their_time_after_the_start() -> None:
    """A later start never bills more, and a start after every pod has exited bills nothing."""
    arrivals = generate(OnOff(duration=900.0), seed=7)[0]
    prepared = prepare(trace("bursts", arrivals), Setup())
    _, result = run_policy(prepared, "startup-aware")
    bills = [
        score_part("p", result, 10.0, 1.0, first_job=0, since=t).pod_seconds for t in (0.0, 300.0, 600.0)
    ]
    assert bills[0] > bills[1] > bills[2] > 0
    assert score_part("p", result, 10.0, 1.0, first_job=0, since=result.end).pod_seconds == 0.0


@pytest.mark.parametrize("first_job", [-1, 10**6])
def test_a_first_job_outside_the_run_is_refused(first_job: int) -> None:
    prepared = prepare(trace("bursts", generate(OnOff(duration=900.0), seed=3)[0]), Setup())
    _, result = run_policy(prepared, "static:2")
    with pytest.raises(ValueError, match="first_job must index a job of the run"):
        score_part("static:2", result, 10.0, prepared.oracle, first_job=first_job, since=0.0)
