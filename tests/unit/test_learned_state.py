"""LearnedState on its own: when it restores, when it saves, and what it never overwrites."""

from __future__ import annotations

from autoscaler.engine.registry import make_policy
from autoscaler.engine.target import WorkloadSpec
from autoscaler.learned_state import LearnedState, hand_over
from autoscaler.timeline import Timeline
from tests.unit.doubles import MemoryStateStore

WORKLOAD = WorkloadSpec()


def at(now: float) -> Timeline:
    return Timeline(lambda: now, lambda: now)


def test_nothing_is_saved_before_the_store_was_read_and_no_leader_is_asked_meanwhile() -> None:
    good = {"saved_at": 1.0, "target": "t"}
    store = MemoryStateStore(document=dict(good), down=True)
    state, policy = LearnedState("t", store, at(100.0)), make_policy("startup-aware", WORKLOAD)
    asked: list[int] = []

    def allowed() -> bool:
        asked.append(1)
        return True

    assert not state.restore(policy) and state.pending  # unreachable: asked again later
    store.down = False
    assert not state.save(policy, 100.0, 30.0, allowed=allowed, force=True)
    assert store.document == good and asked == []  # a cold state never overwrites a good one


def test_a_restored_state_is_saved_when_due_and_only_by_whoever_may_write() -> None:
    first = make_policy("startup-aware", WORKLOAD)
    store = MemoryStateStore()
    assert LearnedState("t", store, at(0.0)).save(first, 0.0, 30.0, allowed=lambda: True, force=True) is False
    state = LearnedState("t", store, at(0.0))
    assert not state.restore(first) and not state.pending  # no document: cold, and done reading
    assert not state.save(first, 10.0, 30.0, allowed=lambda: False)  # a standby or a shadow target
    assert state.save(first, 10.0, 30.0, allowed=lambda: True) and store.saves == 1
    assert not state.save(first, 20.0, 30.0, allowed=lambda: True)  # not due yet
    assert state.save(first, 40.0, 30.0, allowed=lambda: True) and store.saves == 2
    assert store.document is not None and store.document["saved_at"] == 40.0

    later = LearnedState("t", store, at(50.0))
    assert later.restore(make_policy("startup-aware", WORKLOAD)) and not later.pending


def test_a_state_saved_on_a_timeline_ahead_moves_this_one_on() -> None:
    store = MemoryStateStore()
    saved = LearnedState("t", store, at(0.0))
    saved.pending = False
    assert saved.save(make_policy("startup-aware", WORKLOAD), 500.0, 30.0, allowed=lambda: True)
    timeline = at(400.0)  # this process's wall clock is 100 s behind the one that saved
    assert LearnedState("t", store, timeline).restore(make_policy("startup-aware", WORKLOAD))
    assert timeline.now() >= 500.0


def test_an_unusable_document_leaves_the_policy_cold() -> None:
    store = MemoryStateStore(corrupt=True)
    state = LearnedState("t", store, at(0.0))
    assert not state.restore(make_policy("startup-aware", WORKLOAD)) and not state.pending


def test_hand_over_only_between_policies_of_one_kind() -> None:
    old = make_policy("startup-aware", WORKLOAD)
    assert hand_over(old, make_policy("startup-aware", WORKLOAD), "t")
    assert not hand_over(old, make_policy("keda", WORKLOAD), "t")


def test_a_malformed_list_of_counted_pods_is_ignored_not_the_whole_state() -> None:
    store = MemoryStateStore()
    saved = LearnedState("t", store, at(0.0))
    saved.pending = False
    saved.counted = {"u1"}
    assert saved.save(make_policy("startup-aware", WORKLOAD), 10.0, 30.0, allowed=lambda: True)
    assert store.document is not None and store.document["startup_pods"] == ["u1"]
    later = LearnedState("t", store, at(20.0))
    assert later.restore(make_policy("startup-aware", WORKLOAD)) and later.counted == {"u1"}

    store.document["startup_pods"] = "u1"
    broken = LearnedState("t", store, at(20.0))
    assert broken.restore(make_policy("startup-aware", WORKLOAD)) and broken.counted == set()
