"""Replay regression on the real reference trace, through the CLI contract the checks use.

The simulator and every policy are deterministic, so a replay of ``traces/azure_llm_code_2023.csv``
(startup 30 s, service 5 s, SLO 10 s, one warm pod, at most 200) gives the same numbers every time.
They are pinned here to the job and the pod-second: a change to the engine, a baseline or the
simulator that moves them fails this test, and whoever made it updates the numbers below on
purpose, together with the reports (``python -m experiments scorecard`` and the benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.cli import main
from experiments.traces import AZURE_CODE_TRACE


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("regression") / "azure.json"
    argv = ["replay", "--trace", str(AZURE_CODE_TRACE), "--json", str(out)]
    for spec in ("startup-aware", "keda", "static:60"):
        argv += ["--policy", spec]
    assert main(argv) == 0
    document: dict[str, Any] = json.loads(Path(out).read_text(encoding="utf-8"))
    return document


def policy(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in document["policies"] if p["policy"] == name)
    return found


def on_time(document: dict[str, Any], name: str) -> int:
    share: float = policy(document, name)["slo_attainment"]
    jobs: int = document["jobs"]
    return round(share * jobs)


def test_the_trace_and_its_oracle(replay: dict[str, Any]) -> None:
    assert replay["trace"] == "azure_llm_code_2023.csv"
    assert replay["jobs"] == 8819
    assert replay["oracle_pod_seconds"] == pytest.approx(143_981.66, abs=0.01)


@pytest.mark.parametrize(
    ("name", "jobs_on_time", "pod_seconds", "max_replicas"),
    [
        ("startup-aware", 7415, 199_566.44, 200),
        ("keda", 3899, 119_119.10, 71),
        ("static:60", 7965, 206_456.88, 60),
    ],
)
def test_each_policy_replays_to_its_recorded_numbers(
    replay: dict[str, Any], name: str, jobs_on_time: int, pod_seconds: float, max_replicas: int
) -> None:
    row = policy(replay, name)
    assert on_time(replay, name) == jobs_on_time
    assert row["pod_seconds"] == pytest.approx(pod_seconds, abs=0.01)
    assert row["cost_vs_oracle"] == pytest.approx(row["pod_seconds"] / replay["oracle_pod_seconds"], rel=1e-6)
    assert row["max_replicas"] == max_replicas


def test_startup_aware_against_keda_on_the_real_trace(replay: dict[str, Any]) -> None:
    # What the product claims on this trace: far more jobs on time than KEDA's defaults, by more
    # than 35 points (39.8 here). The trace moved later by tenths of a tick moves both policies
    # (83.8-84.6 % against KEDA's 43.5-48.2 %, `benchmarks/azure_shuffled.py --shifts 9
    # --policy startup-aware --policy keda`); the margin stays 36.2-40.4 points in every phase.
    assert on_time(replay, "startup-aware") - on_time(replay, "keda") > 0.35 * replay["jobs"]
    assert policy(replay, "startup-aware")["latency_p50"] == pytest.approx(5.0)
