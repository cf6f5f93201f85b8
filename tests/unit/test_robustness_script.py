"""``benchmarks/robustness.py``: the target workloads' variants, one policy or candidates side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "robustness.py"
ONE_VARIANT = "flash 1 -> 10/s for 1 min"  # the shortest to replay: 30 min at ~1 job/s


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it (its replays go to a process pool, so not in-process)."""
    command = [sys.executable, str(SCRIPT), *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def rows(report: str) -> list[list[str]]:
    table = [line for line in report.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def share_and_cost(cell: str) -> tuple[float, float]:
    share, cost = cell.split(" at ")
    return float(share.rstrip("%")), float(cost.rstrip("x"))


def test_candidates_are_scored_side_by_side_with_their_own_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--only", ONE_VARIANT, "--policy", "static:20", "--policy", "static:60", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    header, _, body = rows(text)
    assert header == ["workload", "seed", "target", "best possible", "static:20", "met", "static:60", "met"]
    assert body[0] == ONE_VARIANT
    small, large = share_and_cost(body[4]), share_and_cost(body[6])
    # The same arrivals for both: the larger static pool is never later and never cheaper.
    assert large[0] >= small[0] and large[1] > small[1]
    # A static pool of 20 is far below a 10 jobs/s crowd's 50 busy pods: the 88 % target is missed.
    assert small[0] < 88.0 and body[5] == "**no**"
    verdicts = [body[5], body[7]]
    assert f"Targets met: static:20 0 of 1, static:60 {verdicts.count('yes')} of 1." in text
    assert "python benchmarks/robustness.py --only" in text  # the command that made it


def test_without_candidates_it_scores_the_default_policy(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--only", ONE_VARIANT, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert rows(out.read_text(encoding="utf-8"))[0][4:] == ["startup-aware", "met"]


def test_a_bad_candidate_or_filter_is_refused_before_any_replay(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--policy", "startup-aware:nope=1", "--out", str(out))
    assert done.returncode == 2
    assert "--policy startup-aware:nope=1: unknown option(s) nope" in done.stderr
    done = run("--only", "no such workload", "--out", str(out))
    assert done.returncode == 2
    assert "--only no such workload: no variant's name contains it" in done.stderr
    assert not out.exists()
