"""What one control tick observes, and what a policy answers.

The daemon builds a :class:`Snapshot` from Redis and Kubernetes; the simulator builds the same type
from its own state. Policies see nothing else, which is what lets a replay in ``experiments`` stand
for the live system.

Times are seconds on one clock per run: epoch seconds in the daemon, simulated seconds in a replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class PodPhase(StrEnum):
    """Lifecycle of one worker replica as the autoscaler sees it."""

    STARTING = "starting"  # created, not Ready yet (warming up the model)
    READY = "ready"  # serving jobs
    DRAINING = "draining"  # asked to stop: finishes its current job, takes no new one


@dataclass(frozen=True, slots=True)
class PodView:
    """One replica. ``busy_slots`` is the number of jobs it is serving now (0 means idle)."""

    name: str
    phase: PodPhase
    created_at: float
    busy_slots: int = 0
    ready_at: float | None = None

    @property
    def busy(self) -> bool:
        return self.busy_slots > 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one tick observes about one scaled target.

    ``arrivals`` counts jobs submitted during the ``interval`` seconds before ``now``;
    ``service_times`` and ``startup_times`` are the samples that became known in that interval
    (durations of jobs that completed, creation-to-Ready durations of pods that became Ready).
    ``current_replicas`` is the target's replica count as last set (the Deployment's spec), which can
    differ from ``len(pods)`` while pods are being created or deleted.

    ``stale`` says the signals could not be read fresh (Redis down, watch broken): a policy must then
    hold the current count, never read missing data as "no load".

    Construction refuses what no reading can mean (a non-finite clock or interval, a negative
    interval or count, no slot per pod), naming the field: the estimators keep running sums, and
    one NaN or infinity in them reads as "no traffic" or "any traffic" for as long as the process
    lives. A negative ``arrivals`` is let through: the daemon's loop never makes one (it estimates
    arrivals from queue growth when a counter goes below zero), but other callers of the engine
    (a replay of a recorded log, a hand-built snapshot) might, and the policies treat it as an
    interval without data.
    """

    now: float
    waiting: int
    in_flight: int
    arrivals: int
    interval: float
    current_replicas: int
    pods: tuple[PodView, ...] = ()
    service_times: tuple[float, ...] = ()
    startup_times: tuple[float, ...] = ()
    slots_per_pod: int = 1
    stale: bool = False

    def __post_init__(self) -> None:
        checks = {
            "now": math.isfinite(self.now),
            "interval": math.isfinite(self.interval) and self.interval >= 0,
            "waiting": self.waiting >= 0,
            "in_flight": self.in_flight >= 0,
            "current_replicas": self.current_replicas >= 0,
            "slots_per_pod": self.slots_per_pod >= 1,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid Snapshot field(s): {', '.join(bad)}")

    def count(self, phase: PodPhase) -> int:
        return len([p for p in self.pods if p.phase is phase])  # a list: faster than sum() of a generator

    @property
    def ready(self) -> int:
        return self.count(PodPhase.READY)

    @property
    def starting(self) -> int:
        return self.count(PodPhase.STARTING)

    @property
    def draining(self) -> int:
        return self.count(PodPhase.DRAINING)


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer for one tick.

    ``desired`` is the replica count to set. When it is below the current count, ``remove`` names the
    pods to let go first (starting ones, then idle ones; never busy ones), which the Kubernetes
    target turns into pod-deletion-cost annotations and the simulator follows. ``reason`` names the
    term that dominated and ``terms`` carries the numbers behind it, for logs, events and metrics.
    """

    desired: int
    reason: str
    terms: Mapping[str, float] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


class Policy(Protocol):
    """The interface shared by the startup-aware policy and every baseline."""

    @property
    def name(self) -> str: ...

    def decide(self, snapshot: Snapshot) -> Decision:
        """Observe one tick and answer it. Called once per tick, in time order."""
        ...


@runtime_checkable
class SurgeResponder(Protocol):
    """A policy that can answer between ticks, when the queue surges (the loop's watch)."""

    def surge(self, snapshot: Snapshot) -> Decision | None:
        """A scale-up to make now, before the next tick, or None to wait for the tick.

        ``snapshot`` is read between two ticks: ``arrivals`` and ``interval`` count from the last
        :meth:`Policy.decide`, and it carries no service or startup samples (the next tick gets
        them). Answering must not change what the policy has learned: the next ``decide`` sees the
        whole interval as usual. Callers apply an answer only if it is above the current count.
        """
        ...


@runtime_checkable
class SurgeGate(Protocol):
    """A surge responder that can tell from two counts alone that it has no answer.

    Building a snapshot means reading every pod; between ticks almost every look at a busy queue
    ends in "no surge" on the queue's length alone. A caller that can count the ready slots cheaply
    (the simulator: its largest cost on long replays) asks this first and skips the snapshot.
    """

    def surge_possible(self, waiting: int, ready_slots: int) -> bool:
        """False only if :meth:`SurgeResponder.surge` would answer None to every snapshot with
        ``waiting`` jobs waiting and ``ready_slots`` slots on ready pods (stale or not)."""
        ...


def removal_order(pods: tuple[PodView, ...], count: int) -> tuple[str, ...]:
    """Pick up to ``count`` pods to remove without touching busy ones.

    Starting pods go first (newest first: the least warm-up sunk into them), then idle ready pods
    (newest first, so long-lived pods keep their warm caches). Busy and draining pods are never
    picked, so the result can be shorter than ``count``: a busy pod that reads as starting (its
    readiness probe failed while it serves a job) is busy all the same.
    """
    if count <= 0:
        return ()
    starting = sorted(
        (p for p in pods if p.phase is PodPhase.STARTING and not p.busy), key=lambda p: -p.created_at
    )
    idle = sorted((p for p in pods if p.phase is PodPhase.READY and not p.busy), key=lambda p: -p.created_at)
    return tuple(p.name for p in (starting + idle)[:count])
