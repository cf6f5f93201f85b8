"""The demo's monitor with the real local target and a stand-in worker (real processes, no Redis):
worker exits are seen before the target reaps them, without taking the exit status from it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoscaler.demo.monitor import Monitor, has_exited
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.loop import TickReport
from autoscaler.targets.base import TargetState
from autoscaler.targets.local import LocalProcessTarget
from tests.unit.test_local_target import FAKE_WORKER, wait_for


def test_has_exited_does_not_reap() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    wait_for(lambda: has_exited(proc.pid))
    assert proc.wait(timeout=5) == 3  # the owner still gets the real status
    assert has_exited(proc.pid)  # and once reaped, it stays exited


class Loop:
    """Stands in for the control loop: only ``last_report`` is read."""

    last_report: TickReport | None = None


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalProcessTarget]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    made = LocalProcessTarget(
        "fake", [sys.executable, str(script)], {"READY_AFTER": "0.1"}, probe_seconds=0.05
    )
    yield made
    made.close(timeout=2)


def test_worker_lifetimes_are_measured_from_spawn_to_exit(target: LocalProcessTarget) -> None:
    loop = Loop()
    monitor = Monitor(loop, target, period=0.02).start()
    try:
        state = target.observe()
        target.scale(Decision(2, "test"), state)
        spawned = time.time()
        pods = target.observe().pods
        loop.last_report = TickReport(
            "fake", time.time(), Snapshot(time.time(), 0, 0, 0, 0.1, 2, pods), Decision(2, "t"),
            True, True, False, 0.0, 0.1,
        )  # fmt: skip
        wait_for(lambda: len(monitor.lives) == 2 and len(monitor.reports) == 1)
        victim = min(target.workers)
        target.scale(Decision(1, "test", remove=(victim,)), TargetState(time.time(), 2, pods))
        stopped = time.time()
        # Nobody observes the target now, so it has not reaped the victim: the monitor still sees it go.
        wait_for(lambda: any(w.exited_at is not None for w in monitor.lives))
        assert victim in target.workers
    finally:
        monitor.stop()
    lives = {w.name: w for w in monitor.lives}
    exited = lives[victim].exited_at
    assert exited is not None and exited - stopped < 2
    assert all(abs(w.created_at - spawned) < 1 for w in lives.values())
    assert [n for n, w in lives.items() if w.exited_at is None] == [n for n in lives if n != victim]
    target.observe()  # the target reaps the victim itself, none the worse for the monitor's look
    assert list(target.workers) == [n for n in lives if n != victim]


def test_tick_pods_give_exact_spawn_and_ready_times() -> None:
    class NoWorkers:
        workers: dict[str, int] = {}  # noqa: RUF012 - read-only stand-in

    loop = Loop()
    pod = PodView("w", PodPhase.READY, created_at=100.0, ready_at=103.0)
    loop.last_report = TickReport(
        "t", 104.0, Snapshot(104.0, 0, 0, 0, 1.0, 1, (pod,)), Decision(1, "t"), False, True, False, 0.0, 1.0
    )
    monitor = Monitor(loop, NoWorkers(), clock=lambda: 200.0)
    monitor.sample()
    (life,) = monitor.lives
    # Gone from the target's workers: exited at the sample time (a reaped process left no pid to ask).
    assert (life.created_at, life.ready_at, life.exited_at) == (100.0, 103.0, 200.0)
