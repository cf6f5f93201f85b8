"""Deletion-cost marks: how a scale-down tells the ReplicaSet controller which pods to remove.

A Deployment's scale-down leaves the choice of pods to the ReplicaSet controller, which removes pods
that are not Ready first and then the lowest ``controller.kubernetes.io/pod-deletion-cost``. So
before a scale-down the pods the decision lets go are marked with a low cost and busy pods with a
high one, each with :data:`MARK_OWNER` recording the value written: a cost is ours only while it
still equals that record. A cost set by anyone else is never removed or changed, except on the pods
a scale-down must order, where :data:`MARK_BEFORE` keeps it to be put back. The marks are removed
once no scale-down is left for the controller to carry out, so that none outlives the scale-down it
was written for (see :meth:`~autoscaler.targets.kubernetes.KubernetesTarget._clear_stale_marks`).

A StatefulSet ignores the cost and removes the highest ordinals first: :func:`scale_down_floor`
says how far either kind may go down without taking a busy pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoscaler.engine.snapshot import PodPhase, PodView

if TYPE_CHECKING:
    # Only a type here: the pod watch reads the annotations named below, so it imports this module.
    from autoscaler.targets.pod_watch import WatchedPod

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
"""Honoured by the ReplicaSet controller (beta, on by default since 1.22): lower cost goes first."""
COST_REMOVE = -1000
"""Pods the decision lets go (starting or idle): deleted before any other Ready pod (lower still if
another pod carries a cost of its own at or below this: see
:meth:`~autoscaler.targets.kubernetes.KubernetesTarget._mark_deletion_costs`)."""
COST_BUSY = 1000
"""Pods serving a job: deleted only after every other pod (higher still if another pod's own cost
is at or above this)."""
MARK_OWNER = "startup-autoscaler.dev/deletion-cost"
"""Written with each deletion cost this target sets, to the same value: the cost on a pod is ours
(ours to remove) only while it equals this record. A cost set by the operator or another tool, even
to the very values this target writes, carries no such record and is left alone; one changed by
someone else after we wrote it no longer matches, and only our record of it is removed."""
MARK_BEFORE = "startup-autoscaler.dev/deletion-cost-before"
"""Written with a mark that replaces a deletion cost that is not ours (the operator's, another
tool's): that cost, put back when the mark is removed (a mark borrows the cost, it does not take
it). Kept on the pod itself, not in this process: it survives a restart of the daemon and a change
of leader, which an in-memory record would not, so whichever replica removes the mark restores it.
Never written over by a re-mark of a cost that is ours (that would record our own value). If the
cost is changed by someone else while our mark is on, their value stays and this record goes."""
COST_MIN, COST_MAX = -(2**31), 2**31 - 1
"""A deletion cost is an int32."""
MARK_HOLD_SECONDS = 60.0
"""How long marks this process wrote stay while more pods are live than ``spec.replicas``: the
ReplicaSet controller picks its victims within seconds of a scale-down, and later excess is a
rollout's surge, during which old marks would steer the old ReplicaSet's scale-downs."""


def parse_cost(value: str | None) -> int | None:
    """A deletion cost as the controller reads it; None when absent or not an integer (it counts 0)."""
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def mark(pod: WatchedPod, want: str) -> dict[str, str | None]:
    """The annotations that set our mark ``want`` on ``pod``: the cost and our record of it, and
    when the cost it replaces is not ours, that cost in :data:`MARK_BEFORE` (to be put back by
    :func:`unmark`; removed if there is none, as any older record is then out of date). A cost
    that is already ours keeps the record made when it was first written: recording our own value
    as "before" would leave our mark behind for good."""
    annotations: dict[str, str | None] = {DELETION_COST: want, MARK_OWNER: want}
    if not pod.our_mark and (pod.deletion_cost is not None or pod.cost_before is not None):
        annotations[MARK_BEFORE] = pod.deletion_cost
    return annotations


def unmark(pod: WatchedPod) -> dict[str, str | None]:
    """The annotations that remove our mark: while the cost is ours (or the watch shows none yet),
    the cost our mark replaced is put back (removed if it replaced none), and our records go; else
    only our records go (someone else has set the cost since: theirs now, and newer than the one
    our mark replaced)."""
    if pod.cost_owner is not None and not pod.our_mark:
        return {MARK_OWNER: None, MARK_BEFORE: None}
    return {DELETION_COST: pod.cost_before, MARK_OWNER: None, MARK_BEFORE: None}


def scale_down_floor(pods: Sequence[PodView], kind: str, workload: str) -> int:
    """The fewest replicas that leave every busy pod alone, given how the controller picks victims.

    A StatefulSet removes the highest ordinals first and ignores deletion cost. A ReplicaSet ranks
    pods that are not Ready before Ready ones, and only then by deletion cost: a busy pod whose
    readiness probe just failed goes before every idle Ready pod, however high its cost. Only the
    idle pods still starting rank ahead of it then, so no more than those may go.
    """
    live = [p for p in pods if p.phase is not PodPhase.DRAINING]
    busy = [p for p in live if p.busy]
    if kind == "StatefulSet":
        return max((_ordinal(p.name, workload) + 1 for p in busy), default=0)
    if any(p.phase is PodPhase.STARTING for p in busy):
        spare = sum(1 for p in live if p.phase is PodPhase.STARTING and not p.busy)
        return len(live) - spare
    return len(busy)


def _ordinal(pod: str, workload: str) -> int:
    suffix = pod.removeprefix(f"{workload}-")
    return int(suffix) if suffix.isdigit() else -1
