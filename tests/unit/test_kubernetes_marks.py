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

from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes import client as k8s

from autoscaler.engine.snapshot import Decision, PodView
from autoscaler.targets.base import TargetState
from autoscaler.targets.kubernetes import (
    COST_BUSY,
    COST_REMOVE,
    DELETION_COST,
    MARK_BEFORE,
    MARK_OWNER,
    KubernetesTarget,
    WatchedPod,
    _mark,
    _unmark,
    format_time,
)

CREATED = 1_700_000_000.0
BUSY, REMOVE = str(COST_BUSY), str(COST_REMOVE)


def pod(annotations: Mapping[str, str], name: str = "worker-a") -> WatchedPod:
    """A Ready pod with these annotations, as the watch parses it."""
    obj: dict[str, Any] = {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
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
    return WatchedPod.from_dict(obj, now=CREATED)


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
    assert _mark(pod({DELETION_COST: "250"}), BUSY) == {
        DELETION_COST: BUSY,
        MARK_OWNER: BUSY,
        MARK_BEFORE: "250",
    }


def test_a_mark_over_no_cost_records_nothing() -> None:
    assert _mark(pod({}), REMOVE) == {DELETION_COST: REMOVE, MARK_OWNER: REMOVE}


def test_re_marking_our_own_mark_keeps_the_cost_it_first_replaced() -> None:
    """A busy pod picked for removal next: the record must stay the operator's 250, not our 1000."""
    marked = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert _mark(marked, REMOVE) == {DELETION_COST: REMOVE, MARK_OWNER: REMOVE}


def test_unmarking_puts_the_replaced_cost_back_and_removes_our_records() -> None:
    marked = pod({DELETION_COST: BUSY, MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert _unmark(marked) == {DELETION_COST: "250", MARK_OWNER: None, MARK_BEFORE: None}


def test_unmarking_a_mark_that_replaced_no_cost_removes_the_cost() -> None:
    assert _unmark(pod({DELETION_COST: BUSY, MARK_OWNER: BUSY})) == {
        DELETION_COST: None,
        MARK_OWNER: None,
        MARK_BEFORE: None,
    }


def test_a_cost_the_operator_changed_while_our_mark_was_on_stays() -> None:
    changed = pod({DELETION_COST: "300", MARK_OWNER: BUSY, MARK_BEFORE: "250"})
    assert _unmark(changed) == {MARK_OWNER: None, MARK_BEFORE: None}


def test_mark_re_mark_and_unmark_leave_the_operators_cost_as_found() -> None:
    """The whole life of a mark on the pod's annotations: busy, then picked, then cleared."""
    annotations = {DELETION_COST: "250", "other": "kept"}
    annotations = merge(annotations, _mark(pod(annotations), BUSY))
    assert annotations[DELETION_COST] == BUSY and annotations[MARK_BEFORE] == "250"
    annotations = merge(annotations, _mark(pod(annotations), REMOVE))
    assert annotations[DELETION_COST] == REMOVE and annotations[MARK_BEFORE] == "250"
    annotations = merge(annotations, _unmark(pod(annotations)))
    assert annotations == {DELETION_COST: "250", "other": "kept"}


def test_a_re_mark_over_a_cost_the_operator_changed_puts_back_their_newer_value() -> None:
    """The operator changes the cost while our mark is on, then a scale-down marks the pod again:
    what is put back at the end is their latest value, not the one our first mark replaced."""
    annotations = {DELETION_COST: "250"}
    annotations = merge(annotations, _mark(pod(annotations), BUSY))
    annotations = merge(annotations, {DELETION_COST: "300"})  # the operator's change
    annotations = merge(annotations, _mark(pod(annotations), BUSY))
    annotations = merge(annotations, _unmark(pod(annotations)))
    assert annotations == {DELETION_COST: "300"}


class _Watch:
    """The slice of ``PodWatch`` that ``_mark_deletion_costs`` reads."""

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
    monkeypatch.setattr(target, "_watch", _Watch([a, b, c]))
    patches: dict[str, dict[str, str | None]] = {}

    def annotate(name: str, annotations: Mapping[str, str | None], may_act: Any) -> int:
        patches[name] = dict(annotations)
        return 1

    monkeypatch.setattr(target, "_annotate", annotate)
    views = tuple(
        PodView(name=p.name, phase=p.phase, created_at=CREATED, ready_at=CREATED + 5, busy_slots=int(p is b))
        for p in (a, b, c)
        if p.phase is not None
    )
    state = TargetState(observed_at=CREATED + 60, replicas=3, pods=views)
    try:
        assert (
            target._mark_deletion_costs(Decision(2, "down", remove=("worker-c",)), state, lambda: True) == 3
        )
    finally:
        target.close()
    assert patches["worker-a"] == {DELETION_COST: "5000", MARK_OWNER: None, MARK_BEFORE: None}
    busy_cost = patches["worker-b"][DELETION_COST]
    assert busy_cost is not None and int(busy_cost) > 5000, patches
    remove_cost = patches["worker-c"][DELETION_COST]
    assert remove_cost is not None and int(remove_cost) <= COST_REMOVE, patches
