"""The demo's option checks: everything a user can fix is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler.demo.cli import build_parser, options
from autoscaler.demo.stack import DemoError
from experiments.traces import write_trace


def checked(tmp_path: Path, *args: str) -> object:
    trace = tmp_path / "trace.csv"
    write_trace(trace, np.arange(0.0, 60.0, 2.0))
    argv = ["--trace", str(trace), "--out", str(tmp_path / "out"), *args]
    return options(build_parser().parse_args(argv))


def test_an_out_directory_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DemoError, match=r"--out .*afile.*cannot create the directory"):
        checked(tmp_path, "--out", str(tmp_path / "afile" / "out"))


@pytest.mark.parametrize("where", ["afile/r.json", "adir"])
def test_a_report_path_that_cannot_be_written_is_refused_up_front(tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(DemoError, match="--report"):
        checked(tmp_path, "--report", str(tmp_path / where))


def test_writable_out_and_report_paths_pass(tmp_path: Path) -> None:
    checked(tmp_path, "--report", str(tmp_path / "new" / "r.json"))
    assert (tmp_path / "out").is_dir() and (tmp_path / "new").is_dir()
    assert not (tmp_path / "new" / "r.json").exists()  # written only at the end of a run
