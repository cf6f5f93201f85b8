"""The contract between a scaled target (Kubernetes, local processes) and the control loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from autoscaler.engine.snapshot import Decision, PodView


@dataclass(frozen=True, slots=True)
class TargetState:
    """What a target reports each tick.

    ``replicas`` is the desired count currently set on the target (the Deployment's spec).
    ``pods`` carry phase and timing; their ``busy_slots`` are filled in by the loop from the queue's
    worker registry. ``startup_times`` are creation-to-Ready durations of pods that became Ready
    since the previous call (each pod reported once).
    """

    observed_at: float
    replicas: int
    pods: tuple[PodView, ...]
    startup_times: tuple[float, ...] = ()


class ScaleTarget(Protocol):
    """Something whose replica count the loop sets."""

    @property
    def name(self) -> str: ...

    def observe(self) -> TargetState:
        """Current replicas and pods. Raises ``TargetUnavailableError`` when it cannot be read."""
        ...

    def scale(self, decision: Decision, state: TargetState) -> None:
        """Apply ``decision.desired``; on scale-down prefer the pods in ``decision.remove``.

        Must never choose a busy pod over an idle one (Kubernetes: pod-deletion-cost annotations
        before patching the scale subresource; local: SIGTERM idle processes first).
        """
        ...

    def close(self) -> None: ...


class TargetUnavailableError(RuntimeError):
    """The target cannot be read or changed now: the loop holds and retries with backoff."""
