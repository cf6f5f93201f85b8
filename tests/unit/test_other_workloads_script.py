"""``benchmarks/other_workloads.py``: the default policy, KEDA and a fixed pool on unlike workloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "other_workloads.py"
ONE_CASE = "a 60 s lull"  # 40 minutes at 2 jobs/s


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it (its replays go to a process pool, so not in-process)."""
    command = [sys.executable, str(SCRIPT), *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_one_workload_is_scored_for_the_policy_keda_and_its_fixed_pool(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = run("--only", ONE_CASE, "--out", str(out))
    assert done.returncode == 0, done.stderr
    table = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    header, _, row = ([cell.strip() for cell in line.strip("|").split("|")] for line in table)
    assert header == ["workload", "startup-aware", "KEDA defaults", "fixed pool"]
    assert ONE_CASE in row[0] and row[3].endswith("(14 pods)")
    share = {name: float(cell.split("%")[0]) for name, cell in zip(header[1:], row[1:], strict=True)}
    # The fixed pool of 14 serves every job; the policy holds the pool through the lull as well.
    assert share["fixed pool"] == 100.0 and share["startup-aware"] >= 99.0


def test_a_filter_that_matches_nothing_is_refused(tmp_path: Path) -> None:
    done = run("--only", "no such workload", "--out", str(tmp_path / "r.md"))
    assert done.returncode == 2 and "no workload's name contains it" in done.stderr
