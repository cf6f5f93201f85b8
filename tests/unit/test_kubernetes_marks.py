"""Deletion-cost marks borrow a cost that is not ours and put it back: the annotations the Kubernetes
target writes to mark and unmark a pod, without an API server.

A pod may carry a ``pod-deletion-cost`` of the operator's (or another tool's). A scale-down that
must order that pod overwrites it; removing the mark afterwards used to delete the cost altogether,
so the operator's value was lost for good. The replaced cost is now kept on the pod (``MARK_BEFORE``,
so that it survives a restart or a change of leader) and put back when the mark goes, unless someone
else has changed the cost meanwhile (theirs is newer then, and stays).

The pods are parsed from their JSON by the target's own code (``WatchedPod.from_dict``) and the
patches applied with JSON merge-patch semantics, as the API server applies them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.engine.snapshot import Decision, PodPhase, PodView
from autoscaler.targets.base import TargetState
from autoscaler.targets.deletion_marks import (
    COST_BUSY,
    COST_REMOVE,
    DELETION_COST,
    MARK_BEFORE,
    MARK_OWNER,
    mark,
    unmark,
)
from autoscaler.targets.kube_client import MERGE_PATCH, format_time
from autoscaler.targets.kubernetes import KubernetesTarget, ScaleOutcome, _ScaleRead
from autoscaler.targets.pod_watch import WatchedPod

CREATED = 1_700_000_000.0
BUSY, REMOVE = str(COST_BUSY), str(COST_REMOVE)


def pod(annotations: Mapping[str, str], name: str = "worker-a", rv: str = "1") -> WatchedPod:
    """A Ready pod with these annotations, as the watch parses it (at resourceVersion ``rv``)."""
    return WatchedPod.from_dict(pod_object(annotations, name, rv), now=CREATED)


def pod_object(annotations: Mapping[str, str], name: str = "worker-a", rv: str = "1") -> dict[str, Any]:
    """The pod as the API server sends it (in a watch event, in the answer to a patch)."""
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "creationTimestamp": format_time(CREATED),
            "annotations": dict(annotations),
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": format_time(CREATED + 5)}
            ],
        },
    }


def merge(annotations: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """``patch`` applied to ``annotations`` as a JSON merge patch: None removes the key."""
    out = dict(annotations)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_the_watch_reads_the_record_of_the_cost_a_mark_replaced() -> None:
    watched = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert watched.cost_before == "250" and watched.our_mark
    assert watched.cost_without_us == "250"
    assert pod({DELETION_COST: "250"}).cost_before is None


def test_a_mark_over_the_operators_cost_records_it() -> None:
    assert mark(pod({DELETION_COST: "250"}), BUSY) == {
        DELETION_COST: BUSY,
        MARK_OWNER: BUSY,
        MARK_BEFORE: "250",
    }


def test_a_mark_over_no_cost_records_nothing() -> None:
    assert mark(pod({}), REMOVE) == {DELETION_COST: REMOVE, MARK_OWNER: REMOVE}


def test_re_marking_our_own_mark_keeps_the_cost_it_first_replaced() -> None:
    """A busy pod picked for removal next: the record must stay the operator's 250, not our 1000."""
    marked = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert mark(marked, REMOVE) == {DELETION_COST: REMOVE, MARK_OWNER: REMOVE}


def test_unmarking_puts_the_replaced_cost_back_and_removes_our_records() -> None:
    marked = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert unmark(marked) == {DELETION_COST: "250", MARK_OWNER: None, MARK_BEFORE: None}


def test_unmarking_a_mark_that_replaced_no_cost_removes_the_cost() -> None:
    assert unmark(pod({DELETION_COST: BUSY, MARK_OWNER: BUSY})) == {
        DELETION_COST: None,
        MARK_OWNER: None,
        MARK_BEFORE: None,
    }


def test_a_cost_the_operator_changed_while_our_mark_was_on_stays() -> None:
    changed = pod({DELETION_COST: "300", MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert unmark(changed) == {MARK_OWNER: None, MARK_BEFORE: None}


def test_mark_re_mark_and_unmark_leave_the_operators_cost_as_found() -> None:
    """The whole life of a mark on the pod's annotations: busy, then picked, then cleared."""
    annotations = {DELETION_COST: "250", "other": "kept"}
    annotations = merge(annotations, mark(pod(annotations), BUSY))
    assert annotations[DELETION_COST] == BUSY and annotations[MARK_BEFORE] == "250"
    annotations = merge(annotations, mark(pod(annotations), REMOVE))
    assert annotations[DELETION_COST] == REMOVE and annotations[MARK_BEFORE] == "250"
    annotations = merge(annotations, unmark(pod(annotations)))
    assert annotations == {DELETION_COST: "250", "other": "kept"}


def test_a_re_mark_over_a_cost_the_operator_changed_puts_back_their_newer_value() -> None:
    """The operator changes the cost while our mark is on, then a scale-down marks the pod again:
    what is put back at the end is their latest value, not the one our first mark replaced."""
    annotations = {DELETION_COST: "250"}
    annotations = merge(annotations, mark(pod(annotations), BUSY))
    annotations = merge(annotations, {DELETION_COST: "300"})  # the operator's change
    annotations = merge(annotations, mark(pod(annotations), BUSY))
    annotations = merge(annotations, unmark(pod(annotations)))
    assert annotations == {DELETION_COST: "300"}


class _Watch:
    """The slice of ``PodWatch`` that ``DeletionMarker.mark_deletion_costs`` reads."""

    def __init__(self, pods: list[WatchedPod]) -> None:
        self._pods = pods

    def pods(self) -> list[WatchedPod]:
        return list(self._pods)

    def stop(self, timeout: float = 2.0) -> None:
        pass


def test_a_busy_pod_is_ranked_above_a_cost_put_back_on_an_idle_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle pod a was marked busy over the operator's 5000 and is now unmarked (5000 put back); busy
    pod b must be marked above 5000, or the controller would remove b before a."""
    a = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "5000"}, "worker-a")
    b = pod({}, "worker-b")
    c = pod({}, "worker-c")
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker")
    patches: dict[str, dict[str, str | None]] = {}

    def annotate(watched: WatchedPod, annotations: Mapping[str, str | None], may_act: Any) -> str:
        patches[watched.name] = dict(annotations)
        return "patched"

    monkeypatch.setattr(target._marks, "_annotate", annotate)
    views = tuple(
        PodView(name=p.name, phase=p.phase, created_at=CREATED, ready_at=CREATED + 5, busy_slots=int(p is b))
        for p in (a, b, c)
        if p.phase is not None
    )
    state = TargetState(observed_at=CREATED + 60, replicas=3, pods=views)
    try:
        decision = Decision(2, "down", remove=("worker-c",))
        marked = target._marks.mark_deletion_costs(_Watch([a, b, c]), decision, state, lambda: True)
        assert marked == (3, None)
    finally:
        target.close()
    assert patches["worker-a"] == {DELETION_COST: "5000", MARK_OWNER: None, MARK_BEFORE: None}
    busy_cost = patches["worker-b"][DELETION_COST]
    assert busy_cost is not None and int(busy_cost) > 5000, patches
    remove_cost = patches["worker-c"][DELETION_COST]
    assert remove_cost is not None and int(remove_cost) <= COST_REMOVE, patches


# --------------------------------------------------------------------------------------------------
# Optimistic concurrency: a patch is computed from the watch's view of a pod, which may be behind the
# API server (the operator just set a cost). The patch names the view's resourceVersion, so that the
# API server refuses it (409) rather than write over the newer value; the pod is then skipped.


class _Answer:
    """What ``patch_namespaced_pod(..., _preload_content=False)`` returns: the raw answer."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.data = json.dumps(obj).encode()


class _Pods:
    """The API server's side of pod patches: records each body; refuses the pods in ``changed``
    with 409 (they changed since the caller's view); answers the others with the patched pod."""

    def __init__(self, *changed: str) -> None:
        self.changed = set(changed)
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.content_types: list[str] = []

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> _Answer:
        self.bodies.setdefault(name, []).append(body)
        self.content_types.append(kw["_content_type"])
        if name in self.changed:
            raise ApiException(status=409, reason="Conflict")
        rv = str(int(body["metadata"].get("resourceVersion", "0")) + 1)
        annotations = {k: v for k, v in body["metadata"]["annotations"].items() if v is not None}
        return _Answer(pod_object(annotations, name, rv))


def concurrency_target(
    monkeypatch: pytest.MonkeyPatch, pods: list[WatchedPod], api: _Pods
) -> KubernetesTarget:
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker")
    monkeypatch.setattr(target, "_watch", _Watch(pods))
    monkeypatch.setattr(target._marks, "_core", api)
    return target


def test_an_annotation_patch_names_the_resource_version_of_the_view_it_was_computed_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without it, a merge patch from an old view writes over whatever the pod carries now."""
    marked = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"}, rv="41")
    api = _Pods()
    target = concurrency_target(monkeypatch, [marked], api)
    try:
        assert target._marks._annotate(marked, unmark(marked), lambda: True) == "patched"
    finally:
        target.close()
    assert api.bodies["worker-a"] == [
        {
            "metadata": {
                "resourceVersion": "41",
                "annotations": {DELETION_COST: "250", MARK_OWNER: None, MARK_BEFORE: None},
            }
        }
    ]
    assert api.content_types == [MERGE_PATCH]  # a merge patch: a precondition, not a field to set


def test_unmarking_a_pod_changed_since_the_watch_showed_it_is_skipped_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator has just set 300 over our mark (the watch still shows our mark over their 250):
    the unmark is refused, once, and the pod is left for the next tick to see as it is now."""
    stale = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"}, "worker-a", rv="41")
    other = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY}, "worker-b", rv="42")
    api = _Pods("worker-a")
    target = concurrency_target(monkeypatch, [stale, other], api)
    try:
        cleared = target._marks.clear_stale_marks(target.pod_watch, lambda: True, replicas=2)
        assert cleared == 1  # worker-b's only
        assert target.writes_skipped == 1
        assert len(api.bodies["worker-a"]) == 1  # not retried
        assert api.bodies["worker-b"][0]["metadata"]["resourceVersion"] == "42"
    finally:
        target.close()


def _down(names: list[str], busy: str) -> TargetState:
    views = tuple(
        PodView(
            name=n, phase=PodPhase.READY, created_at=CREATED, ready_at=CREATED + 5, busy_slots=int(n == busy)
        )
        for n in names
    )
    return TargetState(observed_at=CREATED + 60, replicas=len(names), pods=views)


def test_a_scale_down_whose_busy_mark_is_refused_is_held_for_this_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The busy pod changed since the tick's view (its cost unknown now): a scale-down without its
    mark could take it, so the scale is not patched; the marks written are removed at once."""
    a, b, c = pod({}, "worker-a", "10"), pod({}, "worker-b", "20"), pod({}, "worker-c", "30")
    api = _Pods("worker-b")
    target = concurrency_target(monkeypatch, [a, b, c], api)
    scaled: list[int] = []
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(3, "7", None))
    monkeypatch.setattr(target, "_patch_scale", lambda replicas, rv: scaled.append(replicas))
    monkeypatch.setattr(target._conflicts, "_checked", float("inf"))
    try:
        decision = Decision(2, "down", remove=("worker-a",))
        assert target.scale(decision, _down(["worker-a", "worker-b", "worker-c"], "worker-b")) is None
        outcome = target.last_outcome
    finally:
        target.close()
    assert scaled == []
    assert isinstance(outcome, ScaleOutcome) and outcome.action == "unchanged", outcome
    assert "worker-b changed" in outcome.detail
    assert target.writes_skipped == 1
    # worker-a was marked first, then its mark removed from the patch's answer (the watch, frozen
    # here, never showed it): the second patch names the version the first one returned.
    first, second = api.bodies["worker-a"]
    assert first["metadata"] == {
        "resourceVersion": "10",
        "annotations": {DELETION_COST: REMOVE, MARK_OWNER: REMOVE},
    }
    assert second["metadata"]["resourceVersion"] == "11"
    assert second["metadata"]["annotations"] == {DELETION_COST: None, MARK_OWNER: None, MARK_BEFORE: None}
    assert outcome.marks_cleared == 1


@pytest.mark.parametrize("already", [False, True], ids=["unmarked", "marks-in-place"])
def test_the_marks_a_scale_down_relies_on_stay_until_the_controller_has_picked(
    monkeypatch: pytest.MonkeyPatch, already: bool
) -> None:
    """Right after the scale patch the watch still shows 3 live pods for 2 replicas: the marks the
    decision relies on must stay. Marks already in place (a former leader's, a failed clear's) were
    skipped undated, taken for stale and removed at once, the busy pod's protection with them."""
    a = pod({DELETION_COST: REMOVE, MARK_OWNER: REMOVE} if already else {}, "worker-a", "10")
    b = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY} if already else {}, "worker-b", "20")
    api = _Pods()
    target = concurrency_target(monkeypatch, [a, b, pod({}, "worker-c", "30")], api)
    scaled: list[int] = []
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(scaled[-1] if scaled else 3, "7", None))
    monkeypatch.setattr(target, "_patch_scale", lambda replicas, rv: scaled.append(replicas))
    monkeypatch.setattr(target._conflicts, "_checked", float("inf"))
    monkeypatch.setattr(target._events, "record", lambda *args: None)  # no API server to tell
    try:
        target.scale(
            Decision(2, "down", remove=("worker-a",)), _down(["worker-a", "worker-b", "worker-c"], "worker-b")
        )
    finally:
        target.close()
    assert scaled == [2]
    written = {
        name: [body["metadata"]["annotations"][DELETION_COST] for body in bodies]
        for name, bodies in api.bodies.items()
    }
    assert written == ({} if already else {"worker-a": [REMOVE], "worker-b": [BUSY]})  # and none removed


def test_our_own_answer_is_the_pods_view_only_until_the_watch_shows_it_or_a_later_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = pod({}, rv="10")
    target = concurrency_target(monkeypatch, [before], _Pods())
    try:
        assert target._marks._annotate(before, mark(before, REMOVE), lambda: True) == "patched"
        answer = target._marks._current(before)
        assert answer.resource_version == "11" and answer.our_mark
        assert target._marks._annotate(answer, mark(answer, BUSY), lambda: True) == "patched"
        assert target._marks._current(before).resource_version == "12"  # the watch shows neither write yet
        assert target._marks._current(pod({}, rv="11")).resource_version == "12"  # it shows the first only
        caught_up = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY}, rv="12")
        assert target._marks._current(caught_up) is caught_up
        assert target._marks._current(before) is before  # forgotten once the watch has caught up
    finally:
        target.close()
