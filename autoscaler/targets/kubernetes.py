"""A Deployment or StatefulSet scaled through its ``scale`` subresource, with the official client.

What one :class:`KubernetesTarget` does against the API server, and nothing else (the Role in
``deploy/kustomize/base/rbac.yaml`` grants exactly these calls):

* ``get`` the workload when the pod watch starts (``deployments`` / ``statefulsets``): its label
  selector and uid;
* ``get`` / ``patch`` its ``scale`` subresource: read the replica count each tick, set it. The scale
  carries the workload's uid: a workload deleted and re-created under the same name (new uid, maybe
  a new selector) is noticed there, or by a 404, and its predecessor's pod watch, startup samples,
  marks and Event records are dropped; the watch starts again with the new selector;
* ``list`` + ``watch`` its pods (one watch, re-listed only on 410 Gone or a broken stream) into an
  in-memory map, from which each tick's pod phases and measured startups are read (see
  :mod:`autoscaler.targets.pod_watch`);
* ``patch`` pods: the ``controller.kubernetes.io/pod-deletion-cost`` annotation before a scale-down,
  and its removal once no scale-down is left for the ReplicaSet controller to carry out (so that no
  mark outlives the scale-down it was written for: see
  :meth:`~autoscaler.targets.deletion_marks.DeletionMarker.clear_stale_marks`).
  A cost set by anyone else is never removed or changed, except on the pods a scale-down must
  order, where it is kept to be put back (see :mod:`autoscaler.targets.deletion_marks`). Each patch
  is computed from the watch's view of the pod and carries that view's ``metadata.resourceVersion``:
  a pod changed since (the operator's new cost the watch has not shown yet) answers 409 and is left
  as it is, never written over from an old view (see
  :meth:`~autoscaler.targets.deletion_marks.DeletionMarker._annotate`);
* ``create`` / ``patch`` core/v1 Events on the workload (``SuccessfulRescale`` like the HPA's: see
  :mod:`autoscaler.targets.events`);
* ``list`` HorizontalPodAutoscalers (autoscaling/v2) and KEDA ScaledObjects (keda.sh/v1alpha1, when
  the CRD exists) in the namespace, every ``conflict_check_seconds``: if one targets the same
  workload the target refuses to act (unless it is in shadow mode), so two autoscalers never fight;
  its Warning Event is recorded only under the ``may_act`` gate (see
  :mod:`autoscaler.targets.conflicts`).

API errors are retried with capped exponential backoff and full jitter (429, 5xx, connection
errors: see :func:`~autoscaler.targets.kube_client.with_retries`); a 409 on the scale patch re-reads
the scale; a 409 on a pod patch skips that pod until the next tick (and holds a scale-down for that
tick: see :meth:`~autoscaler.targets.deletion_marks.DeletionMarker.mark_deletion_costs`); anything
that still fails surfaces as :class:`~autoscaler.targets.base.TargetUnavailableError`, on which the
loop holds the replica count.

Every write (each annotation, each scale patch, each of their retries) first asks the loop's
``may_act`` gate whether this replica still leads: a decision whose writes outlast the leadership
it was made under stops half way (:class:`~autoscaler.targets.base.LeadershipLostError`) rather than
undo what the new leader wrote meanwhile. Each such attempt is one request bounded by
:data:`WRITE_TIMEOUT_SECONDS` in all (no urllib3 retries behind it), so a write started while the
gate is open ends before the lease it was started under can expire (see ``autoscaler.leader``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from kubernetes import client as k8s

from autoscaler.engine.snapshot import Decision, PodPhase
from autoscaler.targets.base import (
    WRITE_TIMEOUT_SECONDS,
    ActGate,
    LeadershipLostError,
    TargetState,
    TargetUnavailableError,
)
from autoscaler.targets.conflicts import Conflict, ConflictCheck
from autoscaler.targets.deletion_marks import MARK_HOLD_SECONDS, DeletionMarker, Marks, scale_down_floor
from autoscaler.targets.events import EventRecorder
from autoscaler.targets.kube_client import (
    FIELD_MANAGER,
    MERGE_PATCH,
    ApiCaller,
    Backoff,
    own_namespace,
    selector_string,
    shared_api_client,
    status_of,
    without_retries,
)
from autoscaler.targets.pod_watch import WATCH_READ_SLACK_SECONDS, WATCH_TIMEOUT_SECONDS, PodWatch, WatchedPod

log = logging.getLogger(__name__)

SCALE_CONFLICT_ATTEMPTS = 6
"""Scale patches per decision while each 409 is a status update (the count read again unchanged).

The patch names the resourceVersion read with the count, so that a count changed by someone else is
never overwritten; but the Deployment's controllers bump that version with every status update,
several a second while pods are created and turn Ready: exactly when a tick right after a change of
the count acts. Three attempts (the former bound) failed such a tick under load ("kept conflicting",
a FailedRescale and a backoff for a rescale nobody opposed). Each attempt is still one gated write
of at most ``WRITE_TIMEOUT_SECONDS``."""

SCALE_CONFLICT_PAUSE = Backoff(attempts=SCALE_CONFLICT_ATTEMPTS, base_seconds=0.05, cap_seconds=0.5)
"""The pause between scale patches that conflicted with a status update (see
:data:`SCALE_CONFLICT_ATTEMPTS`): short, since the count is re-read and unchanged, and jittered so
that the next attempt does not meet the next update of the same burst."""


# --------------------------------------------------------------------------------------------------
# The target


@dataclass(slots=True)
class ScaleOutcome:
    """What the last call to :meth:`KubernetesTarget.scale` did, for logs, metrics and tests."""

    action: str  # scaled | unchanged | shadow | refused | failed | abandoned (leadership lost)
    replicas: int | None = None
    detail: str = ""
    cost_patches: int = 0
    marks_cleared: int = 0  # stale deletion-cost marks removed after the call (whatever its outcome)
    at: float = field(default_factory=time.time)


_WORKLOADS = {
    "Deployment": ("deployment", "deployments"),
    "StatefulSet": ("stateful_set", "statefulsets"),
}


class _ScaleRead(NamedTuple):
    """One read of the scale subresource."""

    replicas: int
    resource_version: str
    uid: str | None  # the workload's uid (the API server copies it into the Scale): None if absent


class KubernetesTarget:
    """Scales one Deployment or StatefulSet. See the module docstring for every API call it makes."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        *,
        kind: str = "Deployment",
        label: str | None = None,
        shadow: bool = False,
        conflict_check_seconds: float = 30.0,
        stale_after_seconds: float = 30.0,
        sync_timeout_seconds: float = 10.0,
        request_timeout: tuple[float, float] = (5.0, 15.0),
        backoff: Backoff | None = None,
        watch_timeout_seconds: tuple[int, int] = WATCH_TIMEOUT_SECONDS,
        reporting_instance: str | None = None,
        may_act: ActGate | None = None,
        mark_hold_seconds: float = MARK_HOLD_SECONDS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
    ) -> None:
        if kind not in _WORKLOADS:
            raise ValueError(f"kind must be Deployment or StatefulSet, not {kind!r}")
        self.api_client = api_client
        self.namespace = namespace
        self.workload = name
        self.kind = kind
        self.shadow = shadow
        self._label = label or f"{namespace}/{kind.lower()}/{name}"
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        # Gated writes go through a pool without retries, each attempt bounded by write_timeout in
        # all: see WRITE_TIMEOUT_SECONDS.
        self._writer = without_retries(api_client)
        self._write_apps = k8s.AppsV1Api(self._writer)
        self._write_core = k8s.CoreV1Api(self._writer)
        self._write_timeout = write_timeout
        self._stale_after = stale_after_seconds
        self._sync_timeout = sync_timeout_seconds
        self._timeout = request_timeout
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout_seconds
        self._rng = random.Random()
        self._call = ApiCaller(self._label, self._backoff, self._rng)
        self._lock = threading.Lock()
        self._uid: str | None = None
        self._selector: str | None = None
        self._watch: PodWatch | None = None
        self._generation = 0  # bumped when the workload is forgotten: older watches' callbacks are ignored
        self._startups: list[tuple[str, float]] = []  # (pod uid, creation to Ready), not reported yet
        self._reported: set[str] = set()
        self._events = EventRecorder(
            self._core,
            namespace,
            kind=kind,
            workload=name,
            uid=lambda: self._uid,
            label=self._label,
            instance=reporting_instance or os.environ.get("HOSTNAME") or socket.gethostname(),
            request_timeout=request_timeout,
            call=self._call,
        )
        self._conflicts = ConflictCheck(
            api_client,
            namespace,
            kind=kind,
            workload=name,
            label=self._label,
            shadow=shadow,
            every_seconds=conflict_check_seconds,
            call=self._call,
            events=self._events,
            request_timeout=request_timeout,
        )
        # May observe() clear stale marks? The bound gate (bind_gate), else the latest scale()'s.
        self._gate: ActGate | None = may_act
        self._marks = DeletionMarker(
            self._write_core,
            namespace,
            kind=kind,
            label=self._label,
            shadow=shadow,
            call=self._call,
            read_replicas=lambda: self._read_scale().replicas,
            write_timeout=write_timeout,
            mark_hold_seconds=mark_hold_seconds,
        )
        self.last_outcome: ScaleOutcome | None = None

    # -- ScaleTarget --
    @property
    def name(self) -> str:
        return self._label

    @property
    def conflict(self) -> Conflict | None:
        """The HPA or ScaledObject that scales the same workload, if any (checked periodically)."""
        return self._conflicts.conflict

    @property
    def writes_skipped(self) -> int:
        """Pod patches refused with 409 (the pod changed since seen): skipped."""
        return self._marks.writes_skipped

    @property
    def marks_cleared(self) -> int:
        """Stale deletion-cost marks removed so far (for tests and logs)."""
        return self._marks.marks_cleared

    @property
    def selector(self) -> str | None:
        return self._selector

    @property
    def pod_watch(self) -> PodWatch | None:
        return self._watch

    def bind_gate(self, may_act: ActGate) -> None:
        """The loop's ``may_act`` gate, for the writes ``observe`` makes on its own.

        With it, stale marks (a former leader's, say) are cleared from the first ``observe`` once the
        pod list is synced and the gate says this process may act, not only after a ``scale()``: a
        new leader whose count is already right may never call ``scale()``, and a mark it left would
        steer the next scale-down by someone else. Without it, ``observe`` uses the gate of the
        latest ``scale()`` (none before the first).
        """
        self._gate = may_act

    def start(self) -> None:
        """Begin watching pods early (the daemon calls this when the loop starts). Never raises: if
        the API server cannot be reached yet, the first ``observe`` tries again and reports it."""
        try:
            self._ensure_watch()
        except TargetUnavailableError as exc:
            log.warning("kubernetes: %s: not watching pods yet: %s", self.name, exc)

    def _ensure_watch(self) -> PodWatch:
        """Read the workload (selector, uid) and start the pod watch, unless one runs already.

        Read again only after the watch was dropped: the selector of a Deployment or StatefulSet is
        immutable, so only a re-created workload (a new uid, see :meth:`_check_workload`) has a new one.
        """
        if self._watch is not None:
            return self._watch
        obj = self._call(f"get {self.kind} {self.namespace}/{self.workload}", self._read_workload)
        uid = (obj.get("metadata") or {}).get("uid")
        if self._uid is not None and uid != self._uid:  # re-created while no watch ran (a stalled one)
            self._forget_workload(f"re-created (uid {self._uid} -> {uid})")
        selector = (obj.get("spec") or {}).get("selector") or {}
        try:
            self._selector = selector_string(selector)
        except ValueError as exc:
            raise TargetUnavailableError(f"{self.name}: {exc}") from exc
        self._uid = uid
        generation = self._generation
        watch = PodWatch(
            self._core,
            self.namespace,
            self._selector,
            on_ready=lambda pod, initial: self._pod_ready(pod, initial, generation),
            watch_timeout_seconds=self._watch_timeout,
        )
        watch.start()
        self._watch = watch
        log.info("kubernetes: %s: watching pods %r", self.name, self._selector)
        return watch

    def observe(self) -> TargetState:
        watch = self._synced_watch()
        scale = self._read_scale()
        if not self._check_workload(scale.uid):
            # The pods, samples and marks seen so far were another workload's: start over with the
            # new one's selector (the scale just read is already the new workload's).
            watch = self._synced_watch()
        # Every replica reads; only one that may act records the conflict's Event (a standby, or a
        # target no gate is bound to yet, writes nothing: see autoscaler.targets.conflicts).
        self._conflicts.maybe_check(self._gate or _never)
        if self._gate is not None:
            # A scale-down completes between ticks, when nothing calls scale(), and a new leader
            # finds its predecessor's marks: they go now, under the bound gate or the last scale()'s
            # (asked per write: only the leader writes).
            self._marks.clear_stale_marks(watch, self._gate, scale.replicas)
        pods = tuple(
            sorted(
                (p.view() for p in watch.pods() if p.phase is not None),
                key=lambda v: v.name,
            )
        )
        known = frozenset(p.uid for p in watch.pods())
        with self._lock:
            startups, self._startups = tuple(self._startups), []
            self._reported &= known
        return TargetState(
            observed_at=time.time(),
            replicas=scale.replicas,
            pods=pods,
            startup_times=tuple(seconds for _, seconds in startups),
            startup_pods=tuple(uid for uid, _ in startups),
            pod_ids=known,
        )

    def ready_pods(self) -> int | None:
        """Ready pods in the pod watch's memory, no API call (:class:`~autoscaler.targets.base.ReadyCount`).

        None before the watch has listed, while it fails, or with no watch (a dropped one, a
        workload forgotten): those are for :meth:`observe` to sort out and report.
        """
        watch = self._watch
        if watch is None or not watch.wait_synced(0) or watch.failing_since is not None:
            return None
        return sum(1 for pod in watch.pods() if pod.phase is PodPhase.READY)

    def _synced_watch(self) -> PodWatch:
        """The pod watch, started (or replaced, if stalled) as needed, once its list is synced."""
        watch = self._ensure_watch()
        if self._drop_if_stalled(watch):
            watch = self._ensure_watch()
        if not watch.wait_synced(self._sync_timeout):
            raise TargetUnavailableError(
                f"{self.name}: pod list not synced yet ({watch.last_error or 'waiting'})"
            )
        failing = watch.failing_since
        if failing is not None and time.monotonic() - failing > self._stale_after:
            raise TargetUnavailableError(
                f"{self.name}: pod watch broken for {time.monotonic() - failing:.0f}s: {watch.last_error}"
            )
        return watch

    def _check_workload(self, uid: str | None) -> bool:
        """Whether ``uid`` (from a scale read) is the workload the pod watch was started for.

        Scale patches go by name, so they reach a workload deleted and re-created under the same
        name; but the watch would keep the old selector (the new workload may have another, and
        different pods), its pods and startup samples would be the old workload's, and Events would
        name the old uid. So on a new uid all of that is forgotten (False): the next
        :meth:`_ensure_watch` reads the new workload and watches its pods. An unknown uid on either
        side (no watch started yet, a Scale without one) is no evidence of a change (True).
        """
        if uid is None or self._uid is None or uid == self._uid:
            return True
        self._forget_workload(f"re-created (uid {self._uid} -> {uid})")
        return False

    def _forget_workload(self, why: str) -> None:
        """Drop all that belonged to the workload seen so far: the watch and its pods, unreported
        startup samples, marks this process remembers writing, and the Event records (a repeat is
        counted on the old Event, which names the old uid). The next observe starts from scratch."""
        log.warning("kubernetes: %s: %s %s; dropping its pod watch and state", self.name, self.kind, why)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop(timeout=0)
        with self._lock:
            self._generation += 1  # the old watch's thread may still report a Ready pod: ignored
            self._startups = []
            self._reported = set()
        self._uid = None
        self._selector = None
        self._marks.forget()
        self._events.forget()

    def _drop_if_stalled(self, watch: PodWatch) -> bool:
        """Drop a watch that stopped without an error (then ``observe`` starts a new one).

        Errors are the watch's own business: it re-lists with backoff, and ``observe`` reports an
        outage that lasts. This is for a thread that ended, or hangs with no error and no read
        timeout firing: its pod list would otherwise be served, older every tick, for as long as
        the daemon runs.
        """
        limit = self._watch_timeout[1] + WATCH_READ_SLACK_SECONDS + self._stale_after
        silent = watch.silent_seconds()
        if watch.alive and (watch.failing_since is not None or silent <= limit):
            return False
        why = "its thread ended" if not watch.alive else f"nothing heard for {silent:.0f}s"
        log.error("kubernetes: %s: pod watch stalled (%s); starting a new one", self.name, why)
        watch.stop(timeout=0)
        self._watch = None
        return True

    def scale(self, decision: Decision, state: TargetState, may_act: ActGate | None = None) -> int | None:
        """See :meth:`ScaleTarget.scale`; :attr:`last_outcome` tells why nothing was set, if so.

        Whatever the outcome, deletion-cost marks that no scale-down needs any more are removed
        afterwards: marks written for a patch that did not happen (count changed by someone else,
        leadership lost, patch failed) or left on pods a scale-down spared (held higher, a later
        scale-up) would otherwise steer the next scale-down by someone else (a rollout, ``kubectl
        scale``, an HPA) with an old idea of which pods are idle.
        """
        gate = may_act or _always
        self._gate = gate
        outcome: ScaleOutcome | None = None
        try:
            outcome = self._scale(decision, state, gate)
        except LeadershipLostError as exc:
            outcome = ScaleOutcome("abandoned", detail=str(exc))
            log.warning("kubernetes: %s: %s", self.name, exc)
            raise
        except TargetUnavailableError as exc:
            outcome = ScaleOutcome("failed", detail=str(exc))
            self._events.record(
                "Warning",
                "FailedRescale",
                f"New size: {decision.desired}; reason: {decision.reason}; error: {exc}",
            )
            raise
        finally:
            cleared = self._marks.clear_stale_marks(self._watch, gate)
            if outcome is not None:
                outcome.marks_cleared = cleared
                self.last_outcome = outcome
        return outcome.replicas if outcome.action == "scaled" else None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self._writer.close()  # type: ignore[no-untyped-call]

    # -- scaling --
    def _scale(self, decision: Decision, state: TargetState, may_act: ActGate) -> ScaleOutcome:
        if self.shadow:
            log.info(
                "kubernetes: %s: shadow mode, not setting replicas to %d (%s)",
                self.name,
                decision.desired,
                decision.reason,
            )
            return ScaleOutcome("shadow", decision.desired, "shadow mode")
        self._conflicts.maybe_check(may_act)
        conflict = self._conflicts.conflict
        if conflict is not None:
            log.warning(
                "kubernetes: %s: %s also scales this workload; not acting (desired %d). Remove it or set "
                "shadow: true on this target.",
                self.name,
                conflict,
                decision.desired,
            )
            return ScaleOutcome("refused", decision.desired, f"conflicting autoscaler: {conflict}")

        current, rv, uid = self._read_scale()
        if not self._check_workload(uid):
            # The decision was made from another workload's pods (deleted and re-created since).
            return ScaleOutcome(
                "unchanged", current, "workload re-created since observed; re-deciding next tick"
            )
        if current != state.replicas:
            # Someone else changed spec.replicas since this tick observed it: the decision is stale.
            log.warning(
                "kubernetes: %s: replicas changed from %d to %d since observed; re-deciding next tick",
                self.name,
                state.replicas,
                current,
            )
            return ScaleOutcome("unchanged", current, "replicas changed since observed")
        desired = self._safe_desired(decision, state, current)
        if desired == current:
            return ScaleOutcome("unchanged", current, "already at the desired size")
        marks = (
            self._marks.mark_deletion_costs(self._watch, decision, state, may_act)
            if desired < current
            else Marks(0)
        )
        patches = marks.patches
        if marks.changed is not None:
            # Not safe to go on (see DeletionMarker.mark_deletion_costs); the marks written are cleared below.
            return ScaleOutcome(
                "unchanged",
                current,
                f"pod {marks.changed} changed since observed; re-deciding next tick",
                patches,
            )
        for attempt in range(SCALE_CONFLICT_ATTEMPTS):
            if attempt:
                time.sleep(SCALE_CONFLICT_PAUSE.delay(attempt, self._rng))
            try:
                self._call(
                    f"patch {self.kind} {self.namespace}/{self.workload} scale",
                    functools.partial(self._patch_scale, desired, rv),
                    may_act,
                )
                break
            except TargetUnavailableError as exc:
                if status_of(exc.__cause__ or exc) != 409:
                    raise
                now, rv, _ = self._read_scale()  # 409: resourceVersion moved on (status update); re-read
                if now == desired:
                    # An attempt whose answer was lost (read timeout, reset connection, a 5xx after
                    # the commit) did land; the retry conflicted with it. That is this rescale done,
                    # not someone else's change.
                    break
                if now != current:
                    return ScaleOutcome(
                        "unchanged", now, "replicas changed concurrently; re-deciding next tick", patches
                    )
        else:
            raise TargetUnavailableError(f"{self.name}: scale patch kept conflicting")
        log.info("kubernetes: %s: scaled %d -> %d (%s)", self.name, current, desired, decision.reason)
        self._events.record("Normal", "SuccessfulRescale", rescale_message(desired, decision))
        return ScaleOutcome("scaled", desired, decision.reason, patches)

    def _safe_desired(self, decision: Decision, state: TargetState, current: int) -> int:
        """Never scale below what would force the controller to pick a busy pod."""
        desired = max(0, decision.desired)
        if desired >= current:
            return desired
        if self._rolling_out_with_busy_pods(state):
            log.info(
                "kubernetes: %s: holding %d replicas instead of %d: a rollout is in progress and "
                "pods are busy (the controller splits a scale-down between the ReplicaSets, "
                "whatever the deletion costs say)",
                self.name,
                current,
                desired,
            )
            return current
        floor = scale_down_floor(state.pods, self.kind, self.workload)
        if desired < floor:
            log.info(
                "kubernetes: %s: holding %d replicas instead of %d to spare busy pods",
                self.name,
                min(floor, current),
                desired,
            )
        return min(current, max(desired, floor))

    def _rolling_out_with_busy_pods(self, state: TargetState) -> bool:
        """Whether the workload's live pods belong to more than one controller (a Deployment in a
        rollout: old and new ReplicaSets) while any of them is busy.

        The deletion costs rank pods within one ReplicaSet only, and the Deployment controller
        cuts each ReplicaSet in proportion to its size: a busy pod went whenever its ReplicaSet's
        share of the cut exceeded its idle pods, while the idle pods named for removal in the
        other ReplicaSet stayed. Until one ReplicaSet is left, a scale-down waits.
        """
        watch = self._watch
        live = [p for p in state.pods if p.phase is not PodPhase.DRAINING]
        if watch is None or not any(p.busy for p in live):
            return False
        names = {p.name for p in live}
        return len({p.owner for p in watch.pods() if p.name in names}) > 1

    # -- API calls --
    def _read_workload(self) -> dict[str, Any]:
        singular = _WORKLOADS[self.kind][0]
        read = getattr(self._apps, f"read_namespaced_{singular}")
        resp = read(self.workload, self.namespace, _preload_content=False, _request_timeout=self._timeout)
        return dict(json.loads(resp.data))

    def _read_scale(self) -> _ScaleRead:
        """The scale subresource; a 404 (the workload was deleted) forgets the workload's state, so
        that whatever is created under the name next is watched afresh."""
        singular = _WORKLOADS[self.kind][0]
        read = getattr(self._apps, f"read_namespaced_{singular}_scale")
        try:
            scale = self._call(
                f"get {self.kind} {self.namespace}/{self.workload} scale",
                lambda: read(self.workload, self.namespace, _request_timeout=self._timeout),
            )
        except TargetUnavailableError as exc:
            if status_of(exc.__cause__ or exc) == 404 and self._uid is not None:
                self._forget_workload("deleted (404)")
            raise
        uid = scale.metadata.uid or None
        return _ScaleRead(int(scale.spec.replicas or 0), str(scale.metadata.resource_version), uid)

    def _patch_scale(self, replicas: int, rv: str) -> Any:
        singular = _WORKLOADS[self.kind][0]
        patch = getattr(self._write_apps, f"patch_namespaced_{singular}_scale")
        body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}}
        return patch(
            self.workload,
            self.namespace,
            body,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _request_timeout=self._write_timeout,
        )

    # -- startup measurement --
    def _pod_ready(self, pod: WatchedPod, initial: bool, generation: int | None = None) -> None:
        """Record creation-to-Ready once per pod; pods found already Ready at start count only if
        they never restarted (a restart moves the Ready transition later than the warm-up), and a
        pod without a creation timestamp never counts (see :class:`WatchedPod`). A call from the
        watch of a workload forgotten since (``generation``) is ignored: its pods are not ours."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if pod.uid in self._reported or pod.ready_at is None:
                return
            self._reported.add(pod.uid)
            if initial and pod.restarts > 0:
                return
            startup = pod.startup_seconds
            if startup is None:
                log.warning(
                    "kubernetes: %s: pod %s has no creationTimestamp: no startup sample from it",
                    self.name,
                    pod.name,
                )
                return
            self._startups.append((pod.uid, startup))


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def rescale_message(desired: int, decision: Decision) -> str:
    """Like the HPA's ``New size: 4; reason: ...``, with the numbers behind the reason."""
    terms = ", ".join(f"{k}={v:.3g}" for k, v in list(decision.terms.items())[:8])
    return f"New size: {desired}; reason: {decision.reason}" + (f" ({terms})" if terms else "")


# --------------------------------------------------------------------------------------------------
# Factory for the daemon


class KubernetesTargetSpec(Protocol):
    """The fields of ``autoscaler.config.KubernetesTargetConfig`` this module reads."""

    @property
    def namespace(self) -> str | None: ...

    @property
    def workload_kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def kubeconfig(self) -> str | None: ...


def kubernetes_target_from_config(
    label: str,
    spec: KubernetesTargetSpec,
    *,
    shadow: bool = False,
    api_client: k8s.ApiClient | None = None,
    **options: Any,
) -> KubernetesTarget:
    """A target for one config entry: ``kubernetes_target_from_config(t.name, t.target, shadow=t.shadow)``.

    ``label`` names the target in logs and metrics. An empty namespace means this pod's own.
    ``options`` are passed to :class:`KubernetesTarget` (timeouts, conflict-check period...).
    Nothing is contacted until ``start()`` / the first ``observe()``.
    """
    client = api_client or shared_api_client(spec.kubeconfig)
    return KubernetesTarget(
        client,
        spec.namespace or own_namespace(),
        spec.name,
        kind=spec.workload_kind,
        label=label,
        shadow=shadow,
        **options,
    )
