"""The shipped alert rules: every expression parses, and names only series and labels that exist.

A renamed metric or label would otherwise leave an alert that silently never fires. The exported
names come from the real metric registries, fed the way the daemon and the API feed them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from api.metrics import ApiMetrics
from autoscaler.metrics import Metrics
from tests.unit.test_metrics import report

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "alerts.yaml"
SEVERITIES = {"warning", "critical"}


def exported() -> dict[str, set[str]]:
    """Sample name -> its label names, across the autoscaler's and the API's registries."""
    metrics = Metrics()
    metrics.observe_tick(report(latencies=(3.0, 12.0), slo_seconds=10.0, error="scale-failed"))
    metrics.config_valid.set(1)
    series: dict[str, set[str]] = {}
    for registry in (metrics.registry, ApiMetrics().registry):
        for family in registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def children(node: Any) -> list[Any]:
    out: list[Any] = []
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None and type(child).__module__.startswith("promql_parser"):
            out.append(child)
    args = getattr(node, "args", None)
    return out + list(args or ())


def selectors(node: Any) -> list[Any]:
    """Every vector selector in the expression tree."""
    if type(node).__name__ == "VectorSelector":
        return [node]
    return [s for child in children(node) for s in selectors(child)]


def grouped_by(node: Any) -> list[tuple[list[str], list[Any]]]:
    """(``by`` labels, selectors aggregated) for every aggregation in the tree."""
    found = []
    modifier = getattr(node, "modifier", None)
    if type(node).__name__ == "AggregateExpr" and modifier is not None:
        found.append((list(modifier.labels), selectors(node)))
    return found + [g for child in children(node) for g in grouped_by(child)]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_is_valid_promql_over_exported_series(rule: dict[str, Any]) -> None:
    tree = promql_parser.parse(rule["expr"])  # raises on a syntax error
    series = exported()
    for selector in selectors(tree):
        assert selector.name in series, f"{rule['alert']}: {selector.name} is not exported"
        matched = {m.name for m in selector.matchers.matchers}
        assert matched <= series[selector.name], f"{rule['alert']}: {selector.name} has no {matched}"
    for labels, aggregated in grouped_by(tree):
        for selector in aggregated:
            assert set(labels) <= series[selector.name], f"{rule['alert']}: {selector.name} lacks {labels}"
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


def test_a_misspelt_metric_is_caught() -> None:
    """The check itself can fail: a selector of a series nobody exports is reported."""
    tree = promql_parser.parse("rate(autoscaler_jobs_finshed_total[5m]) > 0")
    assert [s.name for s in selectors(tree)] == ["autoscaler_jobs_finshed_total"]
    assert "autoscaler_jobs_finshed_total" not in exported()
