"""The demo's option checks: everything a user can fix is refused before anything starts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import redis

from autoscaler.demo import cli
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


class LostRedis:
    """A stack whose Redis goes away once started."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.redis_url = "redis://:hunter2@127.0.0.1:6390/0"
        self.running = False
        self.closed = False

    def start(self) -> None:
        self.running = True
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    def close(self) -> None:
        self.closed, self.running = True, False


def test_redis_going_away_mid_run_is_one_error_line_naming_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = [LostRedis()]
    monkeypatch.setattr(cli, "Stack", lambda *a, **k: stacks[0])
    monkeypatch.setattr(cli, "_setup_logging", lambda console: None)  # the root logger stays pytest's
    trace = tmp_path / "trace.csv"
    write_trace(trace, np.arange(0.0, 60.0, 2.0))
    code = cli.main(["--trace", str(trace), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_INCOMPLETE
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "127.0.0.1:6390" in err[0] and "unreachable" in err[0] and "hunter2" not in err[0]
    assert stacks[0].closed


class SignalledWhileClosing:
    """A stack that cannot start (one error line) and receives ``sig`` while it is being stopped."""

    def __init__(self, sig: signal.Signals) -> None:
        self.redis_url = "redis://127.0.0.1:6390/0"
        self.running = True
        self.sig = sig
        self.closed = False

    def start(self) -> None:
        raise DemoError("the API did not start")

    def close(self) -> None:
        os.kill(os.getpid(), self.sig)
        os.kill(os.getpid(), self.sig)  # a second one during the same cleanup is ignored
        self.closed, self.running = True, False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_cleanup_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sig: signal.Signals
) -> None:
    """Before: SIGINT and SIGTERM were ignored for the whole cleanup, so one arriving then was
    dropped and the run went on (to its verdict and exit 0 after a normal run)."""
    stacks = [SignalledWhileClosing(sig)]
    monkeypatch.setattr(cli, "Stack", lambda *a, **k: stacks[0])
    monkeypatch.setattr(cli, "_setup_logging", lambda console: None)
    trace = tmp_path / "trace.csv"
    write_trace(trace, np.arange(0.0, 60.0, 2.0))
    assert cli.main(["--trace", str(trace), "--out", str(tmp_path / "out")]) == cli.EXIT_INTERRUPTED
    assert stacks[0].closed
    assert capsys.readouterr().err.startswith("interrupted:")


def test_the_same_port_for_the_api_and_the_metrics_is_refused_up_front(tmp_path: Path) -> None:
    """It was found only after Valkey and the API had started, as "port N is already in use"."""
    with pytest.raises(DemoError, match="--api-port and --metrics-port are both 8123"):
        checked(tmp_path, "--api-port", "8123", "--metrics-port", "8123")
    checked(tmp_path, "--api-port", "0", "--metrics-port", "0")  # any free port, twice, is fine


def test_a_second_run_into_the_same_out_directory_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    """Two demos with one --out overwrote each other's logs, plots and recorded traffic."""
    held = rf"--out {tmp_path} is in use by another demo run \(pid {os.getpid()}\)"
    with cli._holding(tmp_path), pytest.raises(DemoError, match=held), cli._holding(tmp_path):
        pass
    with cli._holding(tmp_path):  # released with its run, and a lock file left behind blocks nothing
        assert (tmp_path / cli.LOCK_NAME).read_text() == f"{os.getpid()}\n"
