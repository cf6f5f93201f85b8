"""Deletion-cost marks do not outlive the scale-down they were written for (real API server, real
ReplicaSet controller, the autoscaler's ServiceAccount).

A mark is true only when written: a pod marked "delete me first" while idle may be busy a minute
later. The target's own next scale-down rewrites the marks, but a scale-down by someone else (a
rollout shrinking the old ReplicaSet, ``kubectl scale``, an HPA during a migration) reads whatever
is left. So once the ReplicaSet controller has no pods left to remove, the target removes its marks,
whether the scale patch happened or not: spared by a scale-down held higher than the picks,
written for a patch overtaken by someone else's change, left by a leader that lost its lease half
way. Only the leader writes: a target whose gate says no leaves them to the one that acts now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from autoscaler.engine.snapshot import Decision, PodPhase, removal_order
from autoscaler.targets.base import LeadershipLostError, TargetState
from autoscaler.targets.deletion_marks import (
    COST_BUSY,
    COST_REMOVE,
    DELETION_COST,
    MARK_BEFORE,
    MARK_OWNER,
)
from autoscaler.targets.kubernetes import KubernetesTarget
from autoscaler.targets.pod_watch import WatchedPod
from tests.e2e.kube import Install, settled, settled_scene, wait_for

pytestmark = pytest.mark.e2e

OUR_KEYS = (DELETION_COST, MARK_OWNER, MARK_BEFORE)


@pytest.fixture(autouse=True)
def pods_as_found(installed: Install, target: KubernetesTarget) -> Iterator[None]:
    """Every test starts from worker pods without a deletion cost or a record of ours, as the target's
    watch shows them, and with the target's gate open: a test that fails half way (its own clean-up
    at the end never reached) must not leave costs, marks or a closed gate for the next ones."""
    target.bind_gate(lambda: True)
    unset: dict[str, Any] = {"metadata": {"annotations": dict.fromkeys(OUR_KEYS)}}
    for pod in installed.worker_pods():
        if set(OUR_KEYS) & set(pod.metadata.annotations or {}):
            installed.core.patch_namespaced_pod(pod.metadata.name, installed.namespace, unset)

    def clean() -> bool:
        target.observe()
        watch = target.pod_watch
        seen = watch is not None and all(
            p.deletion_cost is None and p.cost_owner is None for p in watch.pods()
        )
        return seen and not marks(installed) and not ours(installed)

    wait_for("worker pods without deletion costs", clean, 10)
    yield


def with_busy(state: TargetState, busy: set[str]) -> TargetState:
    """The tick's view of the pods with the queue's busy workers filled in (as the loop does)."""
    pods = tuple(dataclasses.replace(p, busy_slots=int(p.name in busy)) for p in state.pods)
    return dataclasses.replace(state, pods=pods)


def marks(installed: Install) -> dict[str, str]:
    """The deletion costs on the live worker pods, read from the API server (not the target's watch)."""
    found = {
        p.metadata.name: (p.metadata.annotations or {}).get(DELETION_COST) for p in installed.worker_pods()
    }
    return {name: cost for name, cost in found.items() if cost is not None}


def test_a_mark_on_a_pod_the_scale_down_spared_is_removed_once_it_is_done(
    installed: Install, target: KubernetesTarget
) -> None:
    """remove=[a, b] with three pods busy, the count held one higher than the picks: the controller
    removes one of a/b; the other must not keep its "delete me first" mark after that."""
    state = settled_scene(installed, target, 5)
    names = sorted(p.name for p in state.pods)
    picks, busy = tuple(names[:2]), set(names[2:])
    assert target.scale(Decision(4, "held", remove=picks), with_busy(state, busy)) == 4
    assert target.last_outcome is not None and target.last_outcome.cost_patches == 5
    left = wait_for(
        "the controller to remove one pod",
        lambda: now if len(now := {p.metadata.name for p in installed.worker_pods()}) == 4 else None,
        30,
    )
    assert len(set(picks) & left) == 1  # one pick spared, marked "delete me first"

    # The next ticks observe the scale-down done: the marks go (the spared pick's, the busy pods').
    def unmarked() -> bool:
        target.observe()
        watch = target.pod_watch
        seen = watch is not None and all(p.deletion_cost is None for p in watch.pods())
        return seen and not marks(installed)

    wait_for("no deletion-cost mark left", unmarked, 10, interval=0.25)
    # Four marks (three busy pods, the spared pick); one more patch if a poll outran the watch.
    cleared = target.marks_cleared
    assert cleared >= 4
    target.observe()
    assert target.marks_cleared == cleared, "marks already removed (as the watch shows) patched again"


def test_marks_for_a_scale_patch_overtaken_by_someone_else_are_removed_at_once(
    installed: Install, target: KubernetesTarget
) -> None:
    """The marks are written, then someone else scales up before the patch: the patch conflicts,
    the count is theirs, no scale-down follows, so the marks just written must go."""
    state = settled_scene(installed, target, 3)
    busy = {state.pods[0].name}
    state = with_busy(state, busy)
    overtaken: list[int] = []

    def someone_else_scales_up_first() -> bool:
        if not overtaken:  # asked before the first write: the scale was read, the patch not sent
            body = {"spec": {"replicas": 4}}
            installed.apps.patch_namespaced_deployment_scale("worker", installed.namespace, body)
            overtaken.append(4)
        return True

    decision = Decision(2, "overtaken", remove=removal_order(state.pods, 1))
    assert target.scale(decision, state, someone_else_scales_up_first) is None
    outcome = target.last_outcome
    assert outcome is not None and outcome.action == "unchanged", outcome
    assert installed.worker_replicas() == 4
    assert marks(installed) == {}
    assert outcome.cost_patches == 2 and outcome.marks_cleared == 2, outcome


def test_marks_left_by_a_leader_that_lost_its_lease_are_removed_by_the_next_one(
    installed: Install, target: KubernetesTarget
) -> None:
    """The old leader stops half way (one mark written, no scale patch) and, no longer leading,
    writes nothing more, not even to tidy up; the new leader's first scale (here up) removes it."""
    state = settled_scene(installed, target, 3)
    old = KubernetesTarget(installed.sa, installed.namespace, "worker")
    new = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        lose_lease_half_way(old)
        assert list(marks(installed).values()) == [str(COST_REMOVE)]
        old.observe()  # no scale-down pending, but its gate says no: a former leader never writes
        assert old.marks_cleared == 0 and len(marks(installed)) == 1

        state = new.observe()
        assert new.scale(Decision(state.replicas + 1, "up"), state) == state.replicas + 1
        assert marks(installed) == {}
        assert new.last_outcome is not None and new.last_outcome.marks_cleared == 1
    finally:
        old.close()
        new.close()


def test_a_deletion_cost_someone_else_set_is_never_taken_for_ours(
    installed: Install, target: KubernetesTarget
) -> None:
    """The operator's own costs, even the very values the target writes, carry no record of ours:
    no clearing removes them, and a scale-down orders the pods around them instead of over them."""
    state = settled_scene(installed, target, 3)
    a, b, c = sorted(p.name for p in state.pods)
    theirs = {a: str(COST_BUSY), b: str(COST_REMOVE)}
    for name, cost in theirs.items():
        body = {"metadata": {"annotations": {DELETION_COST: cost}}}
        installed.core.patch_namespaced_pod(name, installed.namespace, body)

    def seen() -> bool:
        watch = target.pod_watch
        pods = {p.name: p.deletion_cost for p in watch.pods()} if watch is not None else {}
        return all(pods.get(name) == cost for name, cost in theirs.items())

    wait_for("the watch to show the operator's costs", seen, 10)
    state = target.observe()
    assert target.scale(Decision(4, "up"), state) == 4
    target.observe()
    assert marks(installed) == theirs, "a cost someone else set was removed"

    # A scale-down: c busy, the new pod picked. c must rank above a's 1000 (a keeps it), the pick
    # below b's -1000 (b keeps it).
    state = wait_for("4 Ready worker pods", lambda: settled(installed, target, 4), 30)
    (new,) = {p.name for p in state.pods} - {a, b, c}
    # The marks stay on until the test opens the gate: the controller picks by them, whenever it
    # gets to it (see scale_down_keeping_the_marks).
    scale_down_keeping_the_marks(installed, target, Decision(3, "down", remove=(new,)), with_busy(state, {c}))
    found = marks(installed)
    assert a in found and b in found, f"the controller took a pod the marks spared: {found}"
    assert found[a] == theirs[a] and found[b] == theirs[b]
    assert int(found[c]) > COST_BUSY and (new not in found or int(found[new]) < COST_REMOVE), found
    clear_the_marks(installed, target, new)
    assert marks(installed) == theirs, "a cost someone else set was removed"


def ours(installed: Install) -> dict[str, dict[str, str]]:
    """Our own annotations (the record of the cost written, of the cost it replaced) on the live
    worker pods, read from the API server."""
    found = {
        p.metadata.name: {
            key: value
            for key, value in (p.metadata.annotations or {}).items()
            if key in (MARK_OWNER, MARK_BEFORE)
        }
        for p in installed.worker_pods()
    }
    return {name: records for name, records in found.items() if records}


def set_cost(installed: Install, target: KubernetesTarget, pod: str, cost: str | None) -> None:
    """The operator sets (None: removes) a pod's deletion cost, and the target's watch shows it."""
    body = {"metadata": {"annotations": {DELETION_COST: cost}}}
    installed.core.patch_namespaced_pod(pod, installed.namespace, body)

    def seen() -> bool:
        watch = target.pod_watch
        found = watch.get(pod) if watch is not None else None
        return found is not None and found.deletion_cost == cost

    wait_for(f"the watch to show {pod}'s cost {cost}", seen, 10)


def scale_down_keeping_the_marks(
    installed: Install, target: KubernetesTarget, decision: Decision, state: TargetState
) -> None:
    """``target.scale(decision)`` under a gate that closes once the scale patch has landed: the marks
    stay on (nothing clears them in the same call), whatever the pace of the ReplicaSet controller,
    until the test binds an open gate."""
    desired = decision.desired

    def gate() -> bool:
        if installed.worker_replicas() == desired:
            return False  # the scale patch has landed: no more writes in this call
        # Each write (the scale patch last) waits until the watch has delivered the ones before it:
        # the ReplicaSet controller reads the marks from a watch of its own, so that the scale-down
        # is not carried out from a view of the pods without them.
        wait_for("the watch to show the marks written", lambda: watch_shows_the_marks(installed, target), 10)
        return True

    assert target.scale(decision, state, gate) == desired
    assert target.last_outcome is not None and target.last_outcome.marks_cleared == 0


def watch_shows_the_marks(installed: Install, target: KubernetesTarget) -> bool:
    """Whether the target's watch shows every worker pod's cost and our records as the API server has them."""
    watch = target.pod_watch
    if watch is None:
        return False
    for pod in installed.worker_pods():
        annotations = pod.metadata.annotations or {}
        seen = watch.get(pod.metadata.name)
        if seen is None or (seen.deletion_cost, seen.cost_owner, seen.cost_before) != tuple(
            annotations.get(key) for key in OUR_KEYS
        ):
            return False
    return True


def clear_the_marks(installed: Install, target: KubernetesTarget, picked: str) -> None:
    """Open the gate and tick until the controller has removed ``picked`` and no mark of ours is left."""
    wait_for("the pick removed", lambda: picked not in {p.metadata.name for p in installed.worker_pods()}, 30)
    target.bind_gate(lambda: True)

    def cleared() -> bool:
        target.observe()
        return not ours(installed)

    wait_for("no annotation of ours left", cleared, 10, interval=0.25)


def busy_mark_over_the_operators_cost(installed: Install, target: KubernetesTarget) -> tuple[str, str]:
    """Three pods, the operator's cost 250 on ``a``; a scale-down by one picks ``c`` with ``a`` busy,
    so ``a`` is marked busy over the 250, which our record keeps. The marks stay on (gate closed)."""
    state = settled_scene(installed, target, 3)
    a, _, c = sorted(p.name for p in state.pods)
    set_cost(installed, target, a, "250")
    state = target.observe()
    scale_down_keeping_the_marks(installed, target, Decision(2, "down", remove=(c,)), with_busy(state, {a}))
    assert ours(installed)[a] == {MARK_OWNER: str(COST_BUSY), MARK_BEFORE: "250"}
    return a, c


def test_the_operators_cost_on_a_pod_a_scale_down_marked_is_put_back_afterwards(
    installed: Install, target: KubernetesTarget
) -> None:
    """The operator's 250 on a busy pod: the scale-down marks it busy over the 250, which it keeps on
    the pod itself (a restart or a new leader can put it back); once the scale-down is done the pod
    carries the 250 again, not no cost at all, and nothing of ours."""
    a, c = busy_mark_over_the_operators_cost(installed, target)
    assert marks(installed)[a] == str(COST_BUSY)

    clear_the_marks(installed, target, c)
    assert marks(installed) == {a: "250"}, "the operator's cost was not put back"
    set_cost(installed, target, a, None)  # leave the pods as found for the next test


def test_a_cost_the_operator_changed_while_our_mark_was_on_stays_as_they_set_it(
    installed: Install, target: KubernetesTarget
) -> None:
    """The operator's 250 is marked over, then the operator sets 300 while the mark is on: theirs is
    newer than the 250 our mark replaced, so removing the mark leaves the 300 (and nothing of ours)."""
    a, c = busy_mark_over_the_operators_cost(installed, target)
    set_cost(installed, target, a, "300")

    clear_the_marks(installed, target, c)
    assert marks(installed) == {a: "300"}, "the operator's newer cost was not left as they set it"
    set_cost(installed, target, a, None)  # leave the pods as found for the next test


def lose_lease_half_way(old: KubernetesTarget) -> None:
    """``old`` leads for exactly one write of a scale-down by 2: one mark written, no scale patch."""
    state = with_busy(old.observe(), set())
    answers = [True]  # leader for exactly one write
    with pytest.raises(LeadershipLostError):
        old.scale(
            Decision(1, "lost-half-way", remove=removal_order(state.pods, 2)),
            state,
            lambda: bool(answers and answers.pop()),
        )


def lose_lease_after_one_mark(installed: Install) -> str:
    """A former leader's leftover: one "delete me first" mark, no scale patch. Returns the pod."""
    old = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        lose_lease_half_way(old)
    finally:
        old.close()
    ((pod, cost),) = marks(installed).items()
    assert cost == str(COST_REMOVE)
    return pod


def test_a_new_leader_that_never_scales_clears_its_predecessors_marks_at_its_first_observe(
    installed: Install, target: KubernetesTarget
) -> None:
    """The count is right, so the new leader never calls scale(): its first observe (synced, the
    bound gate saying yes) removes the mark, which would otherwise steer a later kubectl scale."""
    settled_scene(installed, target, 3)
    lose_lease_after_one_mark(installed)
    new = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        new.bind_gate(lambda: False)  # not (yet) the leader: it writes nothing
        new.observe()
        assert new.marks_cleared == 0 and len(marks(installed)) == 1
        new.bind_gate(lambda: True)
        new.observe()
        assert marks(installed) == {} and new.marks_cleared == 1
    finally:
        new.close()


def test_a_former_leaders_mark_is_cleared_during_a_rollout_surge(
    installed: Install, target: KubernetesTarget
) -> None:
    """A rollout surges (a new pod warming up, maxUnavailable 0): more live pods than spec.replicas
    for as long as it lasts, though no scale-down is pending. The old ReplicaSet's scale-downs will
    read whatever marks are left, so an old one must not be kept for the surge's sake."""
    settled_scene(installed, target, 3)
    lose_lease_after_one_mark(installed)
    new = KubernetesTarget(installed.sa, installed.namespace, "worker", may_act=lambda: True)
    try:
        installed.set_worker_ready_delay(30.0)  # the surge pod stays starting for 30 s
        wait_for("a surge pod", lambda: len(installed.worker_pods()) > 3 or None, 20)

        def surging() -> bool:
            state = new.observe()
            return state.replicas == 3 and sum(p.phase is not PodPhase.DRAINING for p in state.pods) > 3

        wait_for("the watch to show the surge", surging, 10)
        assert marks(installed) == {}, "an old mark kept through the rollout"
        assert new.marks_cleared == 1
    finally:
        new.close()
        installed.set_worker_ready_delay(1.0)
        installed.wait_worker_rollout(120)


# --------------------------------------------------------------------------------------------------
# The watch is behind the API server: a patch computed from its view must not write over a change it
# has not shown yet (it carries the view's resourceVersion; the API server answers 409).


class FrozenWatch:
    """The target's pod watch as it was at one moment: what a watch that lags behind shows."""

    def __init__(self, pods: list[WatchedPod]) -> None:
        self._pods = {p.name: p for p in pods}

    def pods(self) -> list[WatchedPod]:
        return list(self._pods.values())

    def get(self, name: str) -> WatchedPod | None:
        return self._pods.get(name)


def set_cost_unseen(installed: Install, pod: str, cost: str) -> None:
    """The operator sets a pod's deletion cost; the target's (frozen) watch does not show it."""
    body = {"metadata": {"annotations": {DELETION_COST: cost}}}
    installed.core.patch_namespaced_pod(pod, installed.namespace, body)


def test_removing_a_mark_from_a_stale_view_leaves_the_cost_the_operator_just_set(
    installed: Install, target: KubernetesTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our busy mark replaced the operator's 250; the operator then sets 300, and the clearing runs
    before the watch shows it: from its view, the mark is ours and the 250 is to be put back. The
    patch is refused (the pod changed since), so the 300 stays; the next tick, seeing it, removes
    only our records."""
    state = settled_scene(installed, target, 3)
    a, _, c = sorted(p.name for p in state.pods)
    set_cost(installed, target, a, "250")
    state = target.observe()
    scale_down_keeping_the_marks(installed, target, Decision(2, "down", remove=(c,)), with_busy(state, {a}))
    wait_for("the pick removed", lambda: c not in {p.metadata.name for p in installed.worker_pods()}, 30)
    watch = target.pod_watch
    assert watch is not None

    def ours_seen() -> WatchedPod | None:
        seen = watch.get(a)
        return seen if seen is not None and seen.our_mark and seen.cost_before == "250" else None

    wait_for("the watch to show our mark over the 250", ours_seen, 10)
    # While the view still lists c, it shows more pods than replicas: recent marks are held then,
    # and nothing would be written for the 409 to refuse.
    wait_for("the watch to drop the removed pod", lambda: watch.get(c) is None, 30)
    frozen = FrozenWatch(watch.pods())
    set_cost_unseen(installed, a, "300")
    monkeypatch.setattr(target, "_watch", frozen)
    skipped = target.writes_skipped
    cleared = target._marks.clear_stale_marks(frozen, lambda: True)
    assert marks(installed)[a] == "300", "the operator's new cost was overwritten from an old view"
    assert cleared == 0 and target.writes_skipped == skipped + 1
    monkeypatch.undo()

    clear_the_marks(installed, target, c)
    assert marks(installed) == {a: "300"}


def test_a_scale_down_marked_from_a_stale_view_is_held_and_then_carried_out(
    installed: Install, target: KubernetesTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator sets 5000 on busy pod a just before a scale-down, which the watch has not shown:
    the busy mark computed from its view (no cost to keep) is refused, so the 5000 is not lost, and
    the scale is not patched (a busy pod without its mark could be taken). The next tick, from a
    watch that shows the 5000, marks a over it and scales down; the 5000 is put back afterwards."""
    state = settled_scene(installed, target, 3)
    a, _, c = sorted(p.name for p in state.pods)
    state = with_busy(target.observe(), {a})
    watch = target.pod_watch
    assert watch is not None
    frozen = FrozenWatch(watch.pods())
    set_cost_unseen(installed, a, "5000")
    monkeypatch.setattr(target, "_watch", frozen)
    assert target.scale(Decision(2, "down", remove=(c,)), state) is None
    outcome = target.last_outcome
    monkeypatch.undo()
    assert outcome is not None and outcome.action == "unchanged" and f"pod {a} changed" in outcome.detail
    assert installed.worker_replicas() == 3
    assert marks(installed) == {a: "5000"} and not ours(installed), "a cost or a mark left wrong"

    wait_for(
        "the watch to show the 5000",
        lambda: (p := watch.get(a)) is not None and p.deletion_cost == "5000",
        10,
    )
    state = with_busy(target.observe(), {a})
    scale_down_keeping_the_marks(installed, target, Decision(2, "down", remove=(c,)), state)
    assert ours(installed)[a] == {MARK_OWNER: str(COST_BUSY), MARK_BEFORE: "5000"}
    clear_the_marks(installed, target, c)
    assert marks(installed) == {a: "5000"}
