"""The shipped alert rules: every expression parses, and names only series and labels that exist
(:mod:`tests.support.promql`); every alert says how bad it is and what to do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.support.promql import exported, grouped_by, problems, selectors

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "alerts.yaml"
SEVERITIES = {"warning", "critical"}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_is_valid_promql_over_exported_series(rule: dict[str, Any]) -> None:
    assert problems(rule["expr"], exported()) == [], rule["alert"]
    tree = promql_parser.parse(rule["expr"])
    # A $labels.x in the text needs an expression that keeps x.
    text = " ".join(rule["annotations"].values())
    kept = {label for labels, _ in grouped_by(tree) for label in labels}
    assert set(re.findall(r"\$labels\.(\w+)", text)) <= kept, rule["alert"]


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_a_misspelt_metric_or_label_is_caught() -> None:
    """The check itself can fail: unknown series, matchers and grouping labels are reported."""
    series = exported()
    assert problems("rate(autoscaler_jobs_finshed_total[5m]) > 0", series) == [
        "autoscaler_jobs_finshed_total is not exported"
    ]
    assert problems('autoscaler_waiting_jobs{queue="a"}', series) == [
        "autoscaler_waiting_jobs has no ['queue']"
    ]
    assert problems("sum by (reason) (autoscaler_waiting_jobs)", series) == [
        "autoscaler_waiting_jobs lacks ['reason']"
    ]
    assert [s.name for s in selectors(promql_parser.parse("up + autoscaler_leader"))] == [
        "up",
        "autoscaler_leader",
    ]
