"""The shipped Grafana dashboard: every panel's query is PromQL over series we export, and the
layout is one Grafana can load (unique ids, panels on the 24-column grid, the data source and
target variables used everywhere)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.promql import exported, problems

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "dashboard.json"
GRID_COLUMNS = 24


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by what Prometheus would be sent for one chosen target."""
    return expr.replace("$target", "resnet")


QUERIES = queries()


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}:{e[:40]}" for t, e in QUERIES])
def test_each_query_is_valid_promql_over_exported_series(title: str, expr: str) -> None:
    assert problems(as_promql(expr), exported()) == [], title


def test_every_per_target_query_follows_the_target_variable() -> None:
    series = exported()
    for title, expr in QUERIES:
        for name in re.findall(r"\b(autoscaler_\w+)\{", expr):
            if "target" in series[name]:
                assert re.search(name + r'\{target=~"\$target"\}', expr), f"{title}: {name} ignores $target"


def test_the_layout_loads() -> None:
    document = dashboard()
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert document["uid"] and document["schemaVersion"] >= 36
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert (
        problems(variables["target"]["query"]["query"].replace("label_values(", "").split(",")[0], exported())
        == []
    )
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
