"""What one control tick observes, and what a policy answers.

The daemon builds a :class:`Snapshot` from Redis and Kubernetes; the simulator builds the same type
from its own state. Policies see nothing else, which is what lets a replay in ``experiments`` stand
for the live system.

Times are seconds on one clock per run: epoch seconds in the daemon, simulated seconds in a replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

MAX_CLOCK_SECONDS = 1e12
"""Largest ``now`` (either sign) and ``interval`` a snapshot takes: about 31,700 years of seconds.

No clock reads more (epoch seconds are 1.7e9 now), and the engine's window arithmetic stops meaning
anything well before the float range ends: from about 1e17 on, ``now - 60`` is ``now``, so a
window of the last minute held nothing and the KPA baseline divided by its empty sample count."""

MIN_RATE_INTERVAL_SECONDS = 1e-3
"""Shortest ``interval`` a policy reads a rate from; a shorter one is an interval without data.

Two reads of a counter that close tell nothing about a rate (one job more or less is a thousand
jobs a second), and ``arrivals / interval`` over one is a rate of any size: 100 jobs over 5e-324 s
read infinity, and the decision raised. It is not refused: the daemon's reads are a tick or a watch
interval apart, but its intervals are differences of clock readings taken as they come. The jobs
such an interval counted, a millisecond's worth, go uncounted, as those before a first tick do."""

MAX_SLOTS_PER_POD = 10_000
"""Most jobs one pod may serve at once (a snapshot's and a workload's ``slots_per_pod``).

A configured number, not a reading, so a larger one is refused where it is given. The pool search
walks up to one pod beyond ``max_replicas`` in slots, and a burst read off a corrupt counter can
ask for all of them: with 10**12 slots a pod that walk took billions of steps, minutes of a tick;
at this many it takes under a second with the default 200 pods."""

MAX_COUNT = 10**12
"""Largest job or replica count a policy reads: more is read as this many (:func:`bounded`).

A count beyond it is no reading (no Redis holds a trillion jobs) but a live source can deliver one
(a counter key another program set to a 400-digit number, parsed as a Python int), and the loop
builds the snapshot from it, so it is bounded where it is read rather than refused. Any count this
large already sizes for the maximum; below it a window's running sums of counts stay exact floats
(one tick of 2**64 arrivals took the real ones in the short window with it when it expired: the
rate read 0 from then on, for as long as the process lived)."""


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
    interval or count, no slot per pod or more than :data:`MAX_SLOTS_PER_POD`, a clock or
    interval beyond :data:`MAX_CLOCK_SECONDS`), naming the field: the estimators keep running
    sums, and one NaN or infinity in them reads as "no traffic" or "any traffic" for as long as
    the process lives. Counts are not bounded here: the daemon builds its snapshots from Redis and
    Kubernetes, where a count is whatever another program wrote, and a refused snapshot would fail
    the loop's tick outside its handling of policy errors; policies read them through
    :func:`bounded`. A negative ``arrivals`` is let through: the daemon's loop never makes one (it
    estimates arrivals from queue growth when a counter goes below zero), but other callers of the
    engine (a replay of a recorded log, a hand-built snapshot) might, and the policies treat it as
    an interval without data.
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
            "now": math.isfinite(self.now) and abs(self.now) <= MAX_CLOCK_SECONDS,
            "interval": math.isfinite(self.interval) and 0 <= self.interval <= MAX_CLOCK_SECONDS,
            "waiting": self.waiting >= 0,
            "in_flight": self.in_flight >= 0,
            "current_replicas": self.current_replicas >= 0,
            "slots_per_pod": 1 <= self.slots_per_pod <= MAX_SLOTS_PER_POD,
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


def bounded(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with every count above :data:`MAX_COUNT` read as :data:`MAX_COUNT`.

    What each policy decides from, so that no count a live source can deliver makes it raise: a
    400-digit int overflows every conversion to float, and the decision raised instead. The
    snapshot itself keeps the counts as read, for the decision log. Returns ``snapshot`` itself
    when nothing is out of range, which is every tick of a sane system.
    """
    s = snapshot
    # One comparison on the common path: policies call this every tick and every watch look.
    # Pods' busy_slots are only ever compared with 0, so any int will do there.
    if max(s.waiting, s.in_flight, s.arrivals, s.current_replicas) <= MAX_COUNT:
        return s
    top = MAX_COUNT
    return replace(
        s,
        waiting=min(s.waiting, top),
        in_flight=min(s.in_flight, top),
        arrivals=min(s.arrivals, top),
        current_replicas=min(s.current_replicas, top),
    )


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
