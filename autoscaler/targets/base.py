"""The contract between a scaled target (Kubernetes, local processes) and the control loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autoscaler.engine.snapshot import Decision, PodView

WRITE_TIMEOUT_SECONDS = 2.0
"""The whole of one gated write attempt (a scale patch, a pod annotation): connect, send, answer.

The gate is asked right before the attempt, and a leader's gate stays open until
``lease_duration - WRITE_TIMEOUT_SECONDS`` after its last renewal (``autoscaler.leader``): an attempt
that could take longer (the read timeout of other calls, urllib3's own retries, each with a fresh
timeout) could land after another replica took the lease. Shorter than the default lease margin
(15 s - 10 s) with room to spare; a config whose margin is not longer is refused
(``autoscaler.config.LeaderElectionConfig``). A slow answer is retried (gate asked again) by the
Kubernetes target's ``with_retries``; the scale patch carries its resourceVersion, so an attempt
that landed unanswered makes its retry conflict, which is handled."""

ActGate = Callable[[], bool]
"""Asked before each write a target makes: may this replica still act (leader, not shadow)?

A decision takes several writes (one annotation per pod, then the scale, each retried on
transient errors) and can outlast the leadership it started under; a standby that took over
meanwhile must not find its own writes overwritten by the old leader's."""


@dataclass(frozen=True, slots=True)
class TargetState:
    """What a target reports each tick.

    ``replicas`` is the desired count currently set on the target (the Deployment's spec).
    ``pods`` carry phase and timing; their ``busy_slots`` are filled in by the loop from the queue's
    worker registry. ``startup_times`` are creation-to-Ready durations of pods that became Ready
    since the previous call (each pod reported once).

    ``startup_pods`` names the pod each of ``startup_times`` came from, in the same order, by an id
    no other pod ever has (a Kubernetes pod's uid: a StatefulSet's pods reuse their names), and
    ``pod_ids`` holds those ids for every pod the target knows now. A target reports each pod's
    startup once per process only; a new process (a restart, a failover, a loop rebuilt on reload)
    finds the pods already Ready and reports them again, while the policy it restores already
    holds their samples. With the ids the loop counts each pod once across processes (see
    :class:`~autoscaler.learned_state.LearnedState`). Empty and None: the target cannot tell.
    """

    observed_at: float
    replicas: int
    pods: tuple[PodView, ...]
    startup_times: tuple[float, ...] = ()
    startup_pods: tuple[str, ...] = ()
    pod_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.startup_pods and len(self.startup_pods) != len(self.startup_times):
            raise ValueError(
                f"startup_pods names {len(self.startup_pods)} pods for {len(self.startup_times)} samples"
            )

    def startups(self) -> tuple[tuple[str | None, float], ...]:
        """Each startup sample with the id of its pod (None when the target cannot tell)."""
        pods: tuple[str | None, ...] = self.startup_pods or (None,) * len(self.startup_times)
        return tuple(zip(pods, self.startup_times, strict=True))


class ScaleTarget(Protocol):
    """Something whose replica count the loop sets."""

    @property
    def name(self) -> str: ...

    def observe(self) -> TargetState:
        """Current replicas and pods. Raises ``TargetUnavailableError`` when it cannot be read."""
        ...

    def scale(self, decision: Decision, state: TargetState, may_act: ActGate | None = None) -> int | None:
        """Apply ``decision.desired``; on scale-down prefer the pods in ``decision.remove``.

        Must never choose a busy pod over an idle one (Kubernetes: pod-deletion-cost annotations
        before patching the scale subresource; local: SIGTERM idle processes first). ``may_act`` is
        asked before every write: when it says no, the target stops and raises
        :class:`LeadershipLostError`, leaving the rest to whoever acts now.

        Returns the replica count the target set, or None when it left the count as it was. The
        target has the last word, so this may differ from ``decision.desired``: held (or set
        higher) to spare busy pods, not written because someone else changed the count since
        ``state`` was read, refused beside another autoscaler, shadow mode. Metrics and logs
        count what happened from this, not from what was asked.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReadyCount(Protocol):
    """A target that can count its Ready pods from memory, with no round trip to read the target.

    The loop's watch asks every second while jobs wait; most answers are "the ready pods start
    them within the SLO, no surge" (:class:`~autoscaler.engine.snapshot.SurgeGate`), and a full
    :meth:`ScaleTarget.observe` (the Kubernetes target: a scale read from the API server) would
    be spent on them.
    """

    def ready_pods(self) -> int | None:
        """Pods Ready now, as the next :meth:`ScaleTarget.observe` would report them; None when
        the target cannot tell without reading (then the caller reads)."""
        ...


class LeadershipLostError(RuntimeError):
    """This replica stopped being the one that acts while applying a decision; the rest was left undone."""


class TargetUnavailableError(RuntimeError):
    """The target cannot be read or changed now: the loop holds and retries with backoff."""
