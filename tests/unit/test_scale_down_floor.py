"""Which scale-downs are safe for busy pods, given how each controller picks the pods to delete."""

from __future__ import annotations

from autoscaler.engine.snapshot import PodPhase, PodView
from autoscaler.targets.deletion_marks import scale_down_floor

READY, STARTING, DRAINING = PodPhase.READY, PodPhase.STARTING, PodPhase.DRAINING


def pod(name: str, phase: PodPhase, busy: bool = False) -> PodView:
    return PodView(name, phase, created_at=0.0, busy_slots=int(busy))


def test_ready_busy_pods_are_spared_by_their_deletion_cost() -> None:
    pods = [pod("a", READY), pod("b", READY, busy=True), pod("c", READY), pod("d", STARTING)]
    assert scale_down_floor(pods, "Deployment", "w") == 1  # only b must stay


def test_a_busy_pod_that_is_not_ready_lets_only_idle_starting_pods_go() -> None:
    """Its readiness probe failed once: the ReplicaSet ranks it before every Ready pod, so removing
    any Ready idle pod would remove it first, whatever its deletion cost."""
    pods = [
        pod("idle-1", READY),
        pod("idle-2", READY),
        pod("busy-flapping", STARTING, busy=True),
        pod("new-1", STARTING),
        pod("new-2", STARTING),
        pod("leaving", DRAINING),
    ]
    assert scale_down_floor(pods, "Deployment", "w") == 3  # the two new pods may go, nothing else


def test_a_statefulset_keeps_every_ordinal_up_to_its_highest_busy_one() -> None:
    pods = [pod("w-0", READY), pod("w-1", READY, busy=True), pod("w-2", READY), pod("w-3", STARTING)]
    assert scale_down_floor(pods, "StatefulSet", "w") == 2
    assert scale_down_floor([pod("w-0", READY)], "StatefulSet", "w") == 0
