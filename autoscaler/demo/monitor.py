"""Watches the running daemon: every control tick it made, and how long each worker process lived.

Ticks come from the loop's ``last_report`` (what the policy saw and decided, the same object the
metrics are fed from). Worker lifetimes are what the demo bills as pod-seconds, so they are measured
more finely than a tick: a worker is born when the target spawns it (its ``created_at``), and dies
when its process exits. The target only notices an exit at its next tick, when it reaps the
process; waiting for that would bill up to one tick (5 s of trace time) too much per worker. Instead
the monitor asks the kernel with ``waitid(..., WNOWAIT)``, which reports an exited child *without*
reaping it, so the target's own bookkeeping is untouched.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from autoscaler.loop import TickReport

SAMPLE_SECONDS = 0.05


class Ticking(Protocol):
    """What is read of the control loop (a :class:`~autoscaler.loop.TargetLoop`)."""

    @property
    def last_report(self) -> TickReport | None: ...


class Spawning(Protocol):
    """What is read of the target (a :class:`~autoscaler.targets.local.LocalProcessTarget`)."""

    @property
    def workers(self) -> Mapping[str, int]: ...


@dataclass(slots=True)
class WorkerLife:
    """One worker process, epoch seconds: spawned, Ready (None if never), exited (None if running)."""

    name: str
    created_at: float
    ready_at: float | None = None
    exited_at: float | None = None


def has_exited(pid: int) -> bool:
    """Whether child ``pid`` has terminated, without reaping it (its owner still can)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped by its owner
        return True


class Monitor:
    """Samples ``loop`` and ``target`` on a background thread until :meth:`stop`."""

    def __init__(
        self,
        loop: Ticking,
        target: Spawning,
        *,
        period: float = SAMPLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = loop
        self._target = target
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: list[TickReport] = []
        self._lives: dict[str, WorkerLife] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()  # the last word, after the thread

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()

    def sample(self) -> None:
        report = self._loop.last_report
        workers = self._target.workers  # name -> pid of every process not yet reaped
        now = self._clock()
        with self._lock:
            if report is not None and (not self._reports or report.now != self._reports[-1].now):
                self._reports.append(report)
                self._note_pods(report)
            for name, pid in workers.items():
                life = self._lives.setdefault(name, WorkerLife(name, now))
                if life.exited_at is None and has_exited(pid):
                    life.exited_at = now
            for name, life in self._lives.items():
                if name not in workers and life.exited_at is None:
                    life.exited_at = now

    def _note_pods(self, report: TickReport) -> None:
        """Exact spawn and Ready times, from the pods the tick saw."""
        for pod in report.snapshot.pods if report.snapshot else ():
            life = self._lives.setdefault(pod.name, WorkerLife(pod.name, pod.created_at))
            life.created_at = pod.created_at
            if pod.ready_at is not None:
                life.ready_at = pod.ready_at

    @property
    def latest(self) -> TickReport | None:
        with self._lock:
            return self._reports[-1] if self._reports else None

    @property
    def reports(self) -> list[TickReport]:
        with self._lock:
            return list(self._reports)

    @property
    def lives(self) -> list[WorkerLife]:
        with self._lock:
            return [WorkerLife(w.name, w.created_at, w.ready_at, w.exited_at) for w in self._lives.values()]
