"""``benchmarks/azure_shuffled.py``: candidate policies side by side on the same shuffled orders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.generators import OnOff, generate
from experiments.traces import write_trace

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "azure_shuffled.py"
DEFAULT_POLICIES = ["startup-aware", "keda", "static:60"]
TWO_STATIC_POOLS = ("--policy", "static:4", "--policy", "static:8")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it (its replays go to a process pool, so not in-process)."""
    command = [sys.executable, str(SCRIPT), *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    arrivals, _ = generate(OnOff(duration=900.0), seed=3)
    path = tmp_path / "bursts.csv"
    write_trace(path, arrivals, None)
    return path


def rows(report: str) -> list[list[str]]:
    table = [line for line in report.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def assert_never_later_never_cheaper(small: str, large: str) -> None:
    """Two cells ("84.0% at 1.39x") of a smaller and a larger static pool on the same order."""
    small_share, small_cost = (float(x.rstrip("%x")) for x in small.split(" at "))
    large_share, large_cost = (float(x.rstrip("%x")) for x in large.split(" at "))
    assert large_share >= small_share and large_cost > small_cost


def test_candidates_replace_the_default_policies_in_every_row(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--trace", str(trace), "--seeds", "2", "--out", str(out), *TWO_STATIC_POOLS)
    assert done.returncode == 0, done.stderr
    table = rows(out.read_text(encoding="utf-8"))
    assert table[0] == ["order", "jobs", "static:4", "static:8"]
    body = table[2:]
    assert [row[0] for row in body] == ["real", "seed 1", "seed 2", "**mean of the shuffled**"]
    cells = [row[2:] for row in body]
    assert all(len(row) == 2 for row in cells)
    # The same orders for both: the larger static pool is never later and never cheaper.
    for small, large in cells:
        assert_never_later_never_cheaper(small, large)


def test_without_candidates_it_reports_the_default_three(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--trace", str(trace), "--seeds", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert rows(out.read_text(encoding="utf-8"))[0][2:] == DEFAULT_POLICIES


def test_a_bad_candidate_is_refused_before_any_replay(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--trace", str(trace), "--policy", "startup-aware:nope=1", "--out", str(out))
    assert done.returncode == 2
    assert "--policy startup-aware:nope=1: unknown option(s) nope" in done.stderr
    assert not out.exists()


def test_shifts_replay_the_real_order_at_other_phases_of_the_tick(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    argv = ["--trace", str(trace), "--seeds", "0", "--shifts", "2", "--out", str(out)]
    done = run(*argv, "--policy", "static:4", "--policy", "startup-aware")
    assert done.returncode == 0, done.stderr
    body = rows(out.read_text(encoding="utf-8"))[2:]
    later = ["real, 1.66667 s later", "real, 3.33333 s later"]
    labels = ["real", *later, "**mean of the real order's 3 phases**"]
    assert [row[0] for row in body] == labels
    # A static pool never looks at the tick: moving the traffic against it changes no job's wait
    # (its pods are billed for the lead-in, so the cost may move in the last digit).
    assert len({row[2].split(" at ")[0] for row in body}) == 1
    # The reactive policy does, so its phases are different replays.
    assert len({row[3] for row in body[:3]}) > 1


def test_a_negative_shift_count_is_refused(trace: Path, tmp_path: Path) -> None:
    done = run("--trace", str(trace), "--shifts", "-1", "--out", str(tmp_path / "report.md"))
    assert done.returncode == 2
    assert "--shifts must be >= 0, got -1" in done.stderr


def test_after_the_real_hour_each_order_is_scored_as_the_next_hour(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run(
        "--trace", str(trace), "--seeds", "2", "--after-real-hour", "--out", str(out), *TWO_STATIC_POOLS
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert "Steady operation: each order is replayed 3600 s after the real trace began" in text
    table = rows(text)
    assert table[0] == ["order", "jobs", "static:4", "static:8"]
    for _, _, small, large in table[2:]:
        assert_never_later_never_cheaper(small, large)
    # Without the flag the same orders start cold: one warm pod, the rest still starting.
    cold = tmp_path / "cold.md"
    assert (
        run("--trace", str(trace), "--seeds", "2", "--out", str(cold), "--policy", "static:8").returncode == 0
    )
    warm_real, cold_real = rows(text)[2][3], rows(cold.read_text(encoding="utf-8"))[2][2]
    assert float(warm_real.split("%")[0]) >= float(cold_real.split("%")[0])
    assert "Steady operation" not in cold.read_text(encoding="utf-8")


def test_a_trace_longer_than_the_hour_cannot_lead_into_the_next(tmp_path: Path) -> None:
    arrivals, _ = generate(OnOff(duration=4000.0), seed=3)
    long = tmp_path / "long.csv"
    write_trace(long, arrivals, None)
    done = run("--trace", str(long), "--after-real-hour", "--out", str(tmp_path / "r.md"))
    assert done.returncode == 2
    assert "--after-real-hour:" in done.stderr and "the next hour needs one of at most 3600 s" in done.stderr
