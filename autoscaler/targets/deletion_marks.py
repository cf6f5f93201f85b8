"""Deletion-cost marks: how a scale-down tells the ReplicaSet controller which pods to remove.

A Deployment's scale-down leaves the choice of pods to the ReplicaSet controller, which removes pods
that are not Ready first and then the lowest ``controller.kubernetes.io/pod-deletion-cost``. So
before a scale-down the pods the decision lets go are marked with a low cost and busy pods with a
high one, each with :data:`MARK_OWNER` recording the value written: a cost is ours only while it
still equals that record. A cost set by anyone else is never removed or changed, except on the pods
a scale-down must order, where :data:`MARK_BEFORE` keeps it to be put back. The marks are removed
once no scale-down is left for the controller to carry out, so that none outlives the scale-down it
was written for (see :meth:`DeletionMarker.clear_stale_marks`).

A StatefulSet ignores the cost and removes the highest ordinals first: :func:`scale_down_floor`
says how far either kind may go down without taking a busy pod. :class:`DeletionMarker` writes and
removes the marks; the target decides when.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from kubernetes import client as k8s

from autoscaler.engine.snapshot import Decision, PodPhase, PodView
from autoscaler.targets.base import ActGate, LeadershipLostError, TargetState, TargetUnavailableError
from autoscaler.targets.kube_client import FIELD_MANAGER, MERGE_PATCH, ApiCaller, status_of

if TYPE_CHECKING:
    # Only a type here: the pod watch reads the annotations named below, so it imports this module.
    from autoscaler.targets.pod_watch import WatchedPod

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
"""Honoured by the ReplicaSet controller (beta, on by default since 1.22): lower cost goes first."""
COST_REMOVE = -1000
"""Pods the decision lets go (starting or idle): deleted before any other Ready pod (lower still if
another pod carries a cost of its own at or below this: see
:meth:`DeletionMarker.mark_deletion_costs`)."""
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


class Marks(NamedTuple):
    """What :meth:`DeletionMarker.mark_deletion_costs` wrote before a scale-down."""

    patches: int
    changed: str | None = None  # a pod whose patch was refused (409): it changed since the tick's view


AnnotateResult = Literal["patched", "gone", "changed"]
"""How one pod patch ended: written; the pod is gone (404); the pod changed since the view the
patch was computed from (409 on its resourceVersion), so nothing was written."""


class PodSource(Protocol):
    """What the marker reads of the pod watch: the pods it shows now."""

    def pods(self) -> list[WatchedPod]: ...


class DeletionMarker:
    """Writes and removes one workload's deletion-cost marks (see the module docstring).

    The target decides when: :meth:`mark_deletion_costs` before it patches a scale-down, and
    :meth:`clear_stale_marks` after every ``scale()`` and at each ``observe``. It passes the pod
    watch each time (the watch is replaced when it stalls or the workload is re-created) and the
    leadership gate each write is asked. What the marker keeps between calls is what only it uses:
    the pods this process marked and when, and the answers to its own patches.
    """

    def __init__(
        self,
        core: k8s.CoreV1Api,
        namespace: str,
        *,
        kind: str,
        label: str,
        shadow: bool,
        call: ApiCaller,
        read_replicas: Callable[[], int],
        write_timeout: float,
        mark_hold_seconds: float = MARK_HOLD_SECONDS,
    ) -> None:
        """``core`` is for the gated pod patches (a client without retries of its own: see
        :data:`~autoscaler.targets.base.WRITE_TIMEOUT_SECONDS`), each bounded by ``write_timeout``;
        ``call`` is the target's (its retries, gate and error reports); ``read_replicas`` reads the
        workload's ``spec.replicas`` now. ``label`` names the target in logs."""
        self._core = core
        self._namespace = namespace
        self._kind = kind
        self._label = label
        self._shadow = shadow
        self._call = call
        self._read_replicas = read_replicas
        self._write_timeout = write_timeout
        self._hold = mark_hold_seconds
        self._marked: dict[str, float] = {}  # pods this process marked -> monotonic time of the write
        # Pods this process patched, as the API server answered (see _current): name -> the
        # resourceVersions that answer supersedes (all older than it), and the pod it returned.
        self._written: dict[str, tuple[frozenset[str], WatchedPod]] = {}
        self.writes_skipped = 0  # pod patches refused with 409 (the pod changed since seen): skipped
        self.marks_cleared = 0  # stale deletion-cost marks removed so far (for tests and logs)

    def forget(self) -> None:
        """Forget the marks this process remembers writing and its patches' answers (the workload
        was re-created: those pods were another workload's)."""
        self._marked = {}
        self._written = {}

    def mark_deletion_costs(
        self, watch: PodSource | None, decision: Decision, state: TargetState, may_act: ActGate
    ) -> Marks:
        """Annotate pods so that the ReplicaSet controller removes the chosen ones and spares busy ones.

        Pods in ``decision.remove`` get a low cost, busy pods a high one (each with our
        :data:`MARK_OWNER` record, and the cost it replaces in :data:`MARK_BEFORE` if that was
        someone else's), and our marks on every other pod go (the cost they replaced put back). A
        cost on another pod that we did not write is left alone; the busy cost is set above the
        highest of those and of the costs put back (and the remove cost below the lowest), so that
        no such cost ranks an idle pod after a busy one. Only annotations that differ from the
        wanted value are patched (one call per changed pod).

        Each patch carries the resourceVersion of the view it was computed from. A pod that changed
        since (409) is not written, and the first such pod stops the marking: ``changed`` names it
        and the caller does not patch the scale this tick. Going on would not be safe: the costs are
        one ranking, computed together from the costs this tick saw. A busy pod left unmarked could
        be picked before an idle one; an idle pod whose new cost (the operator's, unseen) is above
        the busy cost ranks after the busy pods, so that a scale-down to as many pods as are busy
        would have to take a busy one; and what changed may be the pod's readiness, which the
        controller ranks before any cost. Holding is safe: the marks already written are cleared by
        ``scale`` as for any patch not made, and the next tick decides again from the watch, which
        by then shows the change (a 409 is a change the watch has not delivered yet, so it does not
        repeat once it has). The cost is one tick of delay, only on a pod that changed just then.
        """
        if self._kind == "StatefulSet" or watch is None:
            return Marks(0)
        busy = {p.name for p in state.pods if p.busy}
        remove = set(decision.remove) - busy
        pods = [
            self._current(p) for p in watch.pods() if p.phase is not None and p.phase is not PodPhase.DRAINING
        ]
        theirs = [  # the costs the other pods keep, ours removed (and what they replaced put back)
            cost
            for p in pods
            if p.name not in busy and p.name not in remove
            if (cost := parse_cost(p.cost_without_us)) is not None
        ]
        busy_cost = str(min(COST_MAX, max([COST_BUSY - 1, *theirs]) + 1))
        remove_cost = str(max(COST_MIN, min([COST_REMOVE + 1, *theirs]) - 1))
        patches = 0
        for pod in pods:
            want = busy_cost if pod.name in busy else remove_cost if pod.name in remove else None
            if want is None:
                if pod.cost_owner is None:
                    continue  # no mark of ours, a cost of someone else's or none: not ours to touch
                self._marked.pop(pod.name, None)
                result = self._annotate(pod, unmark(pod), may_act)
            elif pod.deletion_cost != want or pod.cost_owner != want:
                # Remembered before the write: a patch whose answer is lost may still have landed.
                self._marked[pod.name] = time.monotonic()
                result = self._annotate(pod, mark(pod, want), may_act)
            else:
                # Already right (a former leader's mark, a clear that failed, our own from earlier):
                # it serves this decision's scale-down, so its hold counts from now. Left undated,
                # the clear right after the scale patch took it for stale and removed it before the
                # controller picked its pods, a busy pod's protection included.
                self._marked[pod.name] = time.monotonic()
                continue
            if result == "changed":
                # Not written (a write of ours that landed unanswered, its retry refused, carries
                # our MARK_OWNER record: the watch shows it as ours, and it is cleared as such).
                self._marked.pop(pod.name, None)
                return Marks(patches, pod.name)
            patches += result == "patched"
        return Marks(patches)

    def clear_stale_marks(
        self, watch: PodSource | None, may_act: ActGate, replicas: int | None = None
    ) -> int:
        """Remove our deletion-cost marks once no scale-down is left for the controller to carry out.

        A mark is only true when written: an idle pod marked "delete first" may be busy a minute
        later. The ReplicaSet controller reads the marks when it picks the pods to delete, which it
        does as soon as it sees fewer replicas wanted than it has live pods; so while the watch
        shows more live pods than ``spec.replicas`` (``replicas``, else read now), the marks this
        process wrote less than ``mark_hold_seconds`` ago stay. Every other mark of ours (a pod
        whose :data:`MARK_OWNER` record is set, or marked by this process, which the watch may not
        show yet) goes: the controller has long picked its victims, and more live pods than
        ``spec.replicas`` after that is a rollout's surge, whose old-ReplicaSet scale-downs the old
        marks would steer towards pods idle then and busy now. A former leader's marks count as old
        (a lease changes hands far slower than the controller picks). Only stale marks are patched,
        once each, so a quiet workload costs no API call. A cost that is not ours stays; the cost
        a mark replaced (:data:`MARK_BEFORE`) is put back; a record whose cost someone else changed
        since is removed alone (with the cost it replaced: theirs is newer). A pod that changed
        since the watch showed it (409: say the operator just set its cost) is skipped: putting
        back the cost our mark replaced would overwrite theirs. The next tick sees it as it is now.

        Never raises: a failure is logged and tried again at the next tick.
        """
        if self._shadow or self._kind == "StatefulSet" or watch is None:
            return 0
        pods = [self._current(p) for p in watch.pods()]
        names = {p.name for p in pods}
        self._marked = {n: at for n, at in self._marked.items() if n in names}  # forget the pods gone
        self._written = {n: w for n, w in self._written.items() if n in names}
        live = [p for p in pods if p.phase is not None and p.phase is not PodPhase.DRAINING]
        marked = [p for p in live if p.cost_owner is not None or p.name in self._marked]
        if not marked or not may_act():
            return 0
        cleared = 0
        try:
            if replicas is None:
                replicas = self._read_replicas()
            if len(live) > replicas:
                # A scale-down in progress: the controller may not have picked its pods yet.
                now = time.monotonic()
                hold = self._hold
                marked = [p for p in marked if now - self._marked.get(p.name, -math.inf) >= hold]
            for pod in marked:
                if pod.cost_owner is None and pod.deletion_cost is not None:
                    continue  # the watch shows someone else's cost, not our write (yet): wait and see
                result = self._annotate(pod, unmark(pod), may_act)
                if result == "changed":
                    continue  # kept in _marked: looked at again next tick, as the watch shows it then
                cleared += result == "patched"
                self._marked.pop(pod.name, None)
        except (TargetUnavailableError, LeadershipLostError) as exc:
            log.warning("kubernetes: %s: stale deletion-cost marks left for now: %s", self._label, exc)
        if cleared:
            self.marks_cleared += cleared
            log.info("kubernetes: %s: removed %d stale deletion-cost mark(s)", self._label, cleared)
        return cleared

    def _current(self, pod: WatchedPod) -> WatchedPod:
        """``pod`` as the watch shows it, or as our own latest patch of it returned it, if newer.

        The watch delivers our own writes a moment after their answer. A second patch computed from
        the watch's view before then (the marks of a scale-down cleared in the same call, when its
        patch was not made; a re-mark on the next tick) would carry a resourceVersion our own
        patch has superseded, and be refused as if someone else had changed the pod. The answer
        is newer than the watch's view exactly while the watch still shows a resourceVersion that
        answer superseded: our patches succeed only on the version they name, so the versions from
        the one we first patched to the one answered are consecutive, with no one else's between
        them (resourceVersions are opaque: compared for equality only, never for order).
        """
        written = self._written.get(pod.name)
        if written is None:
            return pod
        superseded, answer = written
        if pod.resource_version in superseded and answer.uid == pod.uid:
            return answer
        del self._written[pod.name]  # the watch has caught up (or the pod moved on): it is current
        return pod

    def _annotate(
        self, pod: WatchedPod, annotations: Mapping[str, str | None], may_act: ActGate
    ) -> AnnotateResult:
        """Set (or with None remove) one pod's annotations, on the version of the pod they were
        computed from.

        ``annotations`` were decided from ``pod``, the watch's view (or our last answer, see
        :meth:`_current`), which may be behind the API server: the operator may have just changed
        the cost. A plain merge patch would then write over their value (put back the cost our mark
        replaced, say), and the module's promise is that a cost that is not ours is never changed.
        So the patch names the view's resourceVersion, and the API server refuses it (409) if the
        pod changed since. A refusal is not retried, nor the pod re-read here: what to write
        depends on what changed, and the next tick decides that again from the watch (which by
        then shows it), with the same care as any other decision. It is counted
        (:attr:`writes_skipped`) and logged; the caller decides what a skipped pod means.
        """
        body: dict[str, Any] = {"metadata": {"annotations": dict(annotations)}}
        if pod.resource_version is not None:
            body["metadata"]["resourceVersion"] = pod.resource_version
        try:
            resp: Any = self._call(
                f"annotate pod {pod.name}",
                functools.partial(
                    self._core.patch_namespaced_pod,
                    pod.name,
                    self._namespace,
                    body,
                    field_manager=FIELD_MANAGER,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=self._write_timeout,
                ),
                may_act,
            )
        except TargetUnavailableError as exc:
            status = status_of(exc.__cause__ or exc)
            if status == 404:
                return "gone"  # gone meanwhile
            if status == 409:
                self.writes_skipped += 1
                log.info(
                    "kubernetes: %s: pod %s changed since seen (409); not annotated, re-deciding next tick",
                    self._label,
                    pod.name,
                )
                return "changed"
            raise
        self._remember_answer(pod, resp)
        return "patched"

    def _remember_answer(self, pod: WatchedPod, resp: Any) -> None:
        """Keep the pod our patch returned, for :meth:`_current` (nothing if it cannot be read)."""
        try:
            # The pod's own class: WatchedPod is imported here as a type only (see the imports).
            answer = type(pod).from_dict(json.loads(resp.data), previous=pod)
        except (ValueError, TypeError, AttributeError):
            return
        if pod.resource_version is None or answer.resource_version is None:
            return
        before = self._written.get(pod.name)
        superseded = before[0] if before is not None and before[1] is pod else frozenset()
        self._written[pod.name] = (superseded | {pod.resource_version}, answer)
