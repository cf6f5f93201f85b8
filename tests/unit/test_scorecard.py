"""The scorecard's target checks and report layout."""

import numpy as np

from experiments.replay import Outcome, Setup
from experiments.scorecard import TARGETS, Row, Target, render, score_traces
from experiments.traces import Trace


def outcome(policy: str, attainment: float, cost: float) -> Outcome:
    return Outcome(policy, attainment, 5.0, 6.0, 7.0, 1000.0, cost, 3, 10)


def test_target_needs_both_attainment_and_cost() -> None:
    target = Target(0.9, 1.2)
    assert target.met(outcome("a", 0.95, 1.1))
    assert not target.met(outcome("a", 0.85, 1.1))
    assert not target.met(outcome("a", 0.95, 1.3))


def test_scores_every_policy_on_every_trace_and_marks_targets() -> None:
    rng = np.random.default_rng(0)
    trace = Trace("synthetic:ramp", np.sort(rng.uniform(0, 300, 600)))
    rows = score_traces([(trace, "tiny")], Setup(), ["startup-aware", "static:5"])
    assert [o.policy for o in rows[0].outcomes] == ["startup-aware", "static:5"]
    text = render(rows, Setup(), "python -m experiments scorecard")
    assert "| synthetic:ramp | >= 98.0% at <= 1x |" in text
    verdict = "yes" if TARGETS["synthetic:ramp"].met(rows[0].outcomes[0]) else "**no**"
    assert f"| {verdict} |" in text
    assert "python -m experiments scorecard" in text


def test_rows_without_a_target_say_so() -> None:
    trace = Trace("synthetic:bursts", np.array([0.0, 1.0]))
    text = render([Row(trace, "two jobs", 10.0, [outcome("startup-aware", 1.0, 1.0)])], Setup(), "cmd")
    assert "| synthetic:bursts | (none) | 100.0% at 1.00x | - |" in text


def test_summary_scores_a_startup_aware_variant_with_knobs() -> None:
    trace = Trace("synthetic:ramp", np.array([0.0, 1.0]))
    row = Row(trace, "two jobs", 10.0, [outcome("startup-aware:confidence=0.8", 0.99, 0.9)])
    assert "| synthetic:ramp | >= 98.0% at <= 1x | 99.0% at 0.90x | yes |" in render([row], Setup(), "cmd")
