"""Checks PromQL we ship (alert rules, the Grafana dashboard) against the series we really export.

A renamed metric or label would otherwise leave an alert that silently never fires, or a panel
that stays empty. The exported names come from the real metric registries, fed the way the daemon
and the API feed them.
"""

from __future__ import annotations

from typing import Any

import promql_parser

from api.metrics import ApiMetrics
from autoscaler.metrics import Metrics
from tests.unit.test_metrics import report


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


def children(node: Any) -> list[Any]:
    out: list[Any] = []
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None and type(child).__module__.startswith("promql_parser"):
            out.append(child)
    args = getattr(node, "args", None)
    return out + list(args or ())


def selectors(node: Any, *, labelled: bool = False) -> list[Any]:
    """Every vector selector in the expression tree; with ``labelled``, those whose labels reach
    its result: ``a and b`` and ``a unless b`` keep ``a``'s series and labels, while ``b`` only
    filters them and need not carry the labels a surrounding ``by`` groups on."""
    if labelled and type(node).__name__ == "BinaryExpr" and str(node.op) in {"and", "unless"}:
        return selectors(node.lhs, labelled=True)
    if type(node).__name__ == "VectorSelector":
        return [node]
    return [s for child in children(node) for s in selectors(child, labelled=labelled)]


def grouped_by(node: Any) -> list[tuple[list[str], list[Any]]]:
    """(``by`` labels, selectors whose labels it groups) for every aggregation in the tree."""
    found = []
    modifier = getattr(node, "modifier", None)
    if type(node).__name__ == "AggregateExpr" and modifier is not None:
        found.append((list(modifier.labels), selectors(node, labelled=True)))
    return found + [g for child in children(node) for g in grouped_by(child)]


def problems(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What is wrong with ``expr`` against ``series`` (empty: nothing). Raises on a syntax error."""
    tree = promql_parser.parse(expr)
    found = []
    for selector in selectors(tree):
        if selector.name not in series:
            found.append(f"{selector.name} is not exported")
            continue
        matched = {m.name for m in selector.matchers.matchers}
        if not matched <= series[selector.name]:
            found.append(f"{selector.name} has no {sorted(matched - series[selector.name])}")
    for labels, aggregated in grouped_by(tree):
        for selector in aggregated:
            if selector.name in series and not set(labels) <= series[selector.name]:
                found.append(f"{selector.name} lacks {sorted(set(labels) - series[selector.name])}")
    return found
