"""In-memory implementations of OUR SignalSource and ScaleTarget protocols, for loop and daemon tests.

They stand in for Redis and Kubernetes only where the subject under test is the control logic;
the integration tests run the real sources and targets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.engine.snapshot import Decision, PodView
from autoscaler.engine.state import StateError
from autoscaler.sources.base import QueueSignals, SourceUnavailableError
from autoscaler.targets.base import ActGate, LeadershipLostError, TargetState, TargetUnavailableError

TICK = 5.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = TICK) -> None:
        self.now += seconds


@dataclass
class MemorySource:
    """Returns whatever the test put in ``next``; raises ``SourceUnavailableError`` when ``down``."""

    clock: Clock
    waiting: int = 0
    in_flight: int = 0
    arrivals_total: int | None = 0
    busy: dict[str, int] = field(default_factory=dict)
    service_times: tuple[float, ...] = ()
    latencies: tuple[float, ...] = ()
    down: bool = False
    age: float = 0.0  # how old the reading is (a source serving a cached value)
    closed: bool = False
    pulses: int = 0

    def read(self) -> QueueSignals:
        if self.down:
            raise SourceUnavailableError("connection refused")
        signals = QueueSignals(
            observed_at=self.clock() - self.age,
            waiting=self.waiting,
            in_flight=self.in_flight,
            arrivals_total=self.arrivals_total,
            service_times=self.service_times,
            completions=len(self.service_times),
            busy_by_worker=dict(self.busy),
            latencies=self.latencies,
        )
        self.service_times, self.latencies = (), ()
        return signals

    def pulse(self) -> QueueSignals:
        """The counts alone; the service times stay for the next :meth:`read`."""
        self.pulses += 1
        if self.down:
            raise SourceUnavailableError("connection refused")
        return QueueSignals(self.clock() - self.age, self.waiting, self.in_flight, self.arrivals_total)

    def close(self) -> None:
        self.closed = True


@dataclass
class MemoryTarget:
    clock: Clock
    replicas: int = 2
    pods: list[PodView] = field(default_factory=list)
    startups: list[float] = field(default_factory=list)
    startup_pods: list[str] = field(default_factory=list)  # the pod of each of ``startups``, if given
    pod_ids: set[str] | None = None  # the ids of the pods it knows, if it tells
    fail_observe: bool = False
    fail_scale: bool = False
    scaled: list[tuple[Decision, TargetState]] = field(default_factory=list)
    closed: bool = False
    observes: int = 0
    observe_seconds: float = 0.0  # how long a read takes (the clock moves on meanwhile)
    hold: threading.Event | None = None  # when set to an unset event, a read waits for it (a hung API)
    floor: int = 0  # a scale-down stops here (busy pods the target spares), whatever was asked

    @property
    def name(self) -> str:
        return "memory"

    def observe(self) -> TargetState:
        self.observes += 1
        if self.hold is not None:
            self.hold.wait(30)
        self.clock.advance(self.observe_seconds)
        if self.fail_observe:
            raise TargetUnavailableError("api server down")
        startups, self.startups = tuple(self.startups), []
        startup_pods, self.startup_pods = tuple(self.startup_pods), []
        ids = None if self.pod_ids is None else frozenset(self.pod_ids)
        return TargetState(self.clock(), self.replicas, tuple(self.pods), startups, startup_pods, ids)

    def scale(self, decision: Decision, state: TargetState, may_act: ActGate | None = None) -> int | None:
        if self.fail_scale:
            raise TargetUnavailableError("409 conflict")
        if may_act is not None and not may_act():  # asked right before the write, as the real ones do
            raise LeadershipLostError("no longer the acting leader")
        self.scaled.append((decision, state))
        before = self.replicas
        desired = decision.desired
        if desired < before:  # as the Kubernetes target spares busy pods: never below ``floor``
            desired = max(desired, min(self.floor, before))
        self.replicas = desired
        return desired if desired != before else None

    def close(self) -> None:
        self.closed = True


@dataclass
class MemoryStateStore:
    """OUR StateStore protocol in memory; ``down`` makes it unreachable, ``document`` is what it holds."""

    document: dict[str, Any] | None = None
    down: bool = False
    corrupt: bool = False
    saves: int = 0
    closed: bool = False

    @property
    def location(self) -> str:
        return "memory"

    def load(self) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionError("connection refused")
        if self.corrupt:
            raise StateError("memory: not JSON")
        # Through JSON, as the real store does: what is saved must survive it exactly.
        return None if self.document is None else json.loads(json.dumps(self.document))

    def save(self, document: Mapping[str, Any]) -> None:
        if self.down:
            raise ConnectionError("connection refused")
        self.document = json.loads(json.dumps(document, allow_nan=False))
        self.corrupt = False
        self.saves += 1

    def close(self) -> None:
        self.closed = True
