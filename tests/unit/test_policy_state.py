"""Saving and restoring what the startup-aware policy learned (autoscaler.engine.state), no I/O.

The central property: a policy restored, through JSON, from another's export decides exactly as
the original would have, so a daemon restart changes nothing the simulator can see.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.snapshot import Snapshot
from autoscaler.engine.state import StateError
from autoscaler.engine.target import WorkloadSpec
from experiments.generators import OnOff, Step, generate
from experiments.restart import RestartedAt
from experiments.sim import SimConfig, SimResult, simulate

WORKLOAD = WorkloadSpec(max_replicas=80)


def through_json(document: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(document, allow_nan=False))
    return loaded


def replay(arrivals: np.ndarray, policy: Any) -> SimResult:
    return simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(WORKLOAD))


def same_run(a: SimResult, b: SimResult) -> bool:
    return (
        np.array_equal(a.start, b.start)
        and np.array_equal(a.pod_created, b.pod_created)
        and np.array_equal(a.pod_exit, b.pod_exit)
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.floats(2.0, 12.0),
    on=st.floats(10.0, 60.0),
    off=st.floats(20.0, 200.0),
    seed=st.integers(0, 10_000),
    restart_tick=st.integers(1, 250),
)
def test_a_restored_policy_decides_exactly_as_the_original(
    rate: float, on: float, off: float, seed: int, restart_tick: int
) -> None:
    arrivals, _ = generate(OnOff(rate=rate, on_seconds=on, off_seconds=off, duration=1500.0), seed=seed)
    config = StartupAwareConfig(standing_pool_window_seconds=900.0)
    restarted = RestartedAt(
        lambda: StartupAwarePolicy(WORKLOAD, config), restart_tick * WORKLOAD.tick_seconds
    )
    assert same_run(replay(arrivals, StartupAwarePolicy(WORKLOAD, config)), replay(arrivals, restarted))
    assert restarted.restarted and restarted.skipped == []
    assert 1_000 < restarted.saved_bytes < 100_000  # the restart report's "saved state" column


def test_the_seasonal_profile_is_restored_too() -> None:
    # A 200 s season has two seasons of history by t = 400 s; restart after its first refits.
    arrivals, _ = generate(Step(base_rate=2.0, step_at=500.0, step_seconds=200.0, duration=1200.0), seed=3)
    config = StartupAwareConfig(season_seconds=200.0)
    restarted = RestartedAt(lambda: StartupAwarePolicy(WORKLOAD, config), 700.0)
    original = StartupAwarePolicy(WORKLOAD, config)
    assert same_run(replay(arrivals, original), replay(arrivals, restarted))
    assert restarted.restarted and restarted.skipped == []
    assert original.forecaster.seasonal is not None and original.forecaster.seasonal.fits > 0


def learned(config: StartupAwareConfig | None = None) -> StartupAwarePolicy:
    """A policy that has seen bursts: every part of it holds something.

    The bursts keep no clock: bursts on one would be found as a season, whose pods serve them,
    and the standing pool would retire (test_policy_replay shows that).
    """
    policy = StartupAwarePolicy(WORKLOAD, config)
    rng = np.random.default_rng(1)
    starts = (0.0, 130.0, 330.0, 420.0, 700.0)
    replay(np.sort(np.concatenate([s + rng.uniform(0.0, 30.0, 240) for s in starts])), policy)
    return policy


def clocked() -> StartupAwarePolicy:
    """A policy that has found a season: 30 s bursts every 150 s."""
    policy = StartupAwarePolicy(WORKLOAD)
    replay(generate(OnOff(rate=8.0, on_seconds=30.0, off_seconds=120.0, duration=900.0), seed=1)[0], policy)
    return policy


def test_the_export_holds_the_learned_pool_and_is_plain_json() -> None:
    policy = learned()
    document = policy.export_state()
    assert document["format"] == 1 and document["policy"] == "startup-aware"
    assert policy._pool is not None and policy._pool.pods > 0
    restored = StartupAwarePolicy(WORKLOAD)
    restored.restore_state(through_json(document))
    assert restored._pool is not None and restored._pool.pods == policy._pool.pods
    assert restored.export_state() == through_json(document)


def test_without_a_pool_the_saved_state_stops_growing_with_the_ticks() -> None:
    """Only the pool reads the history of raw asks; without it, it gained a row a tick for good.

    At 30 days that was 46 MB in memory, an 8.8 MB document saved every 30 s, and a second to
    copy the policy for each answer between ticks. A pool-on document restored into a pool-off
    policy drops its rows at the next tick, too.
    """
    off = StartupAwareConfig(standing_pool_window_seconds=0.0)
    policy = StartupAwarePolicy(WORKLOAD, off)
    rng = np.random.default_rng(5)
    sizes = []
    for i in range(1, 6001):  # eight hours of 5 s ticks at about 2 jobs/s
        policy.decide(
            Snapshot(
                now=5.0 * i,
                waiting=0,
                in_flight=8,
                arrivals=int(rng.poisson(10)),
                interval=5.0,
                current_replicas=14,
            )
        )
        if i in (3000, 6000):  # the period detector fills its four hours by the first
            sizes.append(len(json.dumps(policy.export_state())))
    assert sizes[1] < 1.05 * sizes[0]
    inherited = StartupAwarePolicy(WORKLOAD, off)
    document = through_json(learned().export_state())
    assert document["state"]["_raw_history"]
    inherited.restore_state(document)
    last = document["state"]["_last_decision_at"]
    inherited.decide(
        Snapshot(now=last + 5.0, waiting=0, in_flight=0, arrivals=0, interval=5.0, current_replicas=1)
    )
    assert inherited.export_state()["state"]["_raw_history"]["deque"] == []


def test_other_knobs_keep_their_own_values_and_skip_what_they_turn_off() -> None:
    document = through_json(learned().export_state())
    other = StartupAwarePolicy(
        WORKLOAD, StartupAwareConfig(steady_window_seconds=0.0, standing_pool_window_seconds=300.0)
    )
    skipped = other.restore_state(document)
    assert skipped == ["state.forecaster.steady"]
    assert other.config.standing_pool_window_seconds == 300.0
    assert other._pool is not None and other._pool.window_seconds == 300.0
    # The inherited arrivals are trimmed to the new window at the next tick.
    last = document["state"]["_last_decision_at"]
    other.decide(
        Snapshot(now=last + 5.0, waiting=0, in_flight=0, arrivals=0, interval=5.0, current_replicas=1)
    )
    assert all(t > last + 5.0 - 300.0 for t, *_ in other._pool._ticks)


def test_a_changed_season_is_skipped_not_mixed() -> None:
    document = through_json(learned(StartupAwareConfig(season_seconds=300.0)).export_state())
    other = StartupAwarePolicy(WORKLOAD, StartupAwareConfig(season_seconds=600.0))
    assert other.restore_state(document) == ["state.forecaster.seasonal"]
    searching = StartupAwarePolicy(WORKLOAD)  # no season set: it looks for one, the saver did not
    assert searching.restore_state(document) == ["state.forecaster.seasonal", "state._detector"]


def test_a_document_from_before_the_probation_restores_the_rest_and_names_what_it_lacks() -> None:
    """Fields added since the first documents of this format: an older document restores."""
    original = learned()
    document = through_json(original.export_state())
    del document["state"]["_season_model"]
    del document["state"]["_season_orders"]
    del document["state"]["_pool"]["object"]["_probation_start"]
    del document["state"]["_pool"]["object"]["_probation_length"]
    restored = StartupAwarePolicy(WORKLOAD)
    assert restored.restore_state(document) == [
        "state._pool._probation_start",
        "state._pool._probation_length",
        "state._season_model",
        "state._season_orders",
    ]
    assert restored._pool is not None and original._pool is not None
    assert restored._pool.pods == original._pool.pods and restored._season_model is None
    del document["state"]["_pool"]["object"]["pods"]  # an older version had this one: corrupt
    with pytest.raises(StateError, match=r"state\._pool\.pods: missing"):
        StartupAwarePolicy(WORKLOAD).restore_state(document)


@pytest.mark.parametrize("at", [900.0, 745.0, 610.0])
def test_a_detected_season_is_restored_with_its_profile(at: float) -> None:
    """Bursts every 150 s: the period is found by t = 600 s; a restart keeps it exactly, also
    while pods ordered for the next burst are held for it (745 s) or during one (610 s)."""
    arrivals, _ = generate(OnOff(rate=8.0, on_seconds=30.0, off_seconds=120.0, duration=1500.0), seed=2)
    restarted = RestartedAt(lambda: StartupAwarePolicy(WORKLOAD), at)
    original = StartupAwarePolicy(WORKLOAD)
    assert same_run(replay(arrivals, original), replay(arrivals, restarted))
    assert restarted.restarted and restarted.skipped == []
    assert original._detector is not None and original._detector.period == 150.0
    assert original.forecaster.seasonal is not None and original.forecaster.seasonal.season_seconds == 150.0


def test_a_failed_restore_leaves_no_detected_season_behind() -> None:
    document = through_json(clocked().export_state())
    assert document["state"]["_detector"]["object"]["period"] == 150.0
    document["state"]["_service"] = "garbage"
    fresh = StartupAwarePolicy(WORKLOAD)
    with pytest.raises(StateError):
        fresh.restore_state(document)
    assert fresh.forecaster.seasonal is None


def corrupted(path: list[str | int], value: Any) -> dict[str, Any]:
    document = through_json(learned().export_state())
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**through_json(learned().export_state()), "format": 2}, "format: expected 1, got 2"),
        ({**through_json(learned().export_state()), "policy": "keda"}, "saved by 'keda'"),
        (
            corrupted(["state", "_pool", "object", "pods"], "many"),
            "state._pool.pods: expected a finite number",
        ),
        (corrupted(["state", "forecaster", "object", "level"], math.inf), "state.forecaster.level"),
        (corrupted(["state", "_recent"], [1, 2]), "state._recent: expected a saved deque"),
        (corrupted(["state", "_service"], 3.0), "state._service: expected a saved object"),
        (corrupted(["state"], {}), "state._rate_now: missing"),
    ],
)
def test_a_malformed_document_is_refused_and_changes_nothing(document: dict[str, Any], message: str) -> None:
    policy = learned()
    before = policy.export_state()
    with pytest.raises(StateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy.restore_state(document)
    assert policy.export_state() == before


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["state", "forecaster", "object", "trend"],
            None,
            "state.forecaster.trend: expected a finite number",
        ),
        (["state", "_pool", "object", "pods"], 2.5, "state._pool.pods: expected a whole number"),
        (
            ["state", "_persistence", "object", "_pending", "deque", 0],
            [1.0, 2.0],
            "_pending[0]: expected a row of 4",
        ),
        (["state", "_recent", "deque", 0, 1], 3.5, r"state._recent[0][1]: expected a whole number"),
        (["state", "_rate_now", "object", "ticks", "deque", 0, 1], None, r"ticks[0][1]: expected a finite"),
        (["state", "_service", "object", "_samples", "deque", 0], [5.0], r"_samples[0]: expected a finite"),
        (["state", "forecaster", "object", "level"], [1.0], "state.forecaster.level: expected a finite"),
        (["state", "_detector", "object", "period"], 0.001, "state._detector.period: 0.001 s is not a lag"),
        (["state", "forecaster", "object", "seasonal"], 5, "the restored policy cannot decide"),
    ],
)
def test_a_document_the_next_tick_could_not_use_is_refused_naming_what_is_wrong(
    path: list[str | int], value: Any, message: str
) -> None:
    """Restored whole, each of these failed every tick after it: the daemon held its count for good."""
    document = corrupted(path, value)
    policy = StartupAwarePolicy(WORKLOAD)
    before = policy.export_state()
    with pytest.raises(StateError, match=re.escape(message)):
        policy.restore_state(document)
    assert policy.export_state() == before
    policy.decide(Snapshot(now=5.0, waiting=3, in_flight=0, arrivals=4, interval=5.0, current_replicas=1))


def test_a_detected_seasons_profile_of_the_wrong_length_is_refused() -> None:
    document = through_json(clocked().export_state())
    offsets = document["state"]["forecaster"]["object"]["seasonal"]["object"]["_offsets"]
    offsets["array"] = offsets["array"][:-1]
    policy = StartupAwarePolicy(WORKLOAD)
    with pytest.raises(StateError, match=r"seasonal\._offsets: expected an array of 30 offsets"):
        policy.restore_state(document)
    assert policy.forecaster.seasonal is None


LEARNED = through_json(learned().export_state())


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path in a document to a number, a null or a list (its first two items recursed)."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in leaves(value, (*path, key))]
    if isinstance(node, list):
        return [path, *(p for i, item in enumerate(node[:2]) for p in leaves(item, (*path, i)))]
    return [] if isinstance(node, str | bool) else [path]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(leaves(LEARNED["state"], ("state",))),
    value=st.sampled_from([None, -1, 0, 2.5, 1e300, -1e300, [], [1.0], [None, 2.0], {"object": {}}]),
)
def test_any_one_corrupt_value_is_refused_or_decided_with(path: tuple[str | int, ...], value: Any) -> None:
    """Whatever one field of a saved document holds, restoring it never leaves a policy that fails.

    Either the restore is refused (the daemon starts cold) and the policy is unchanged, or the
    restored policy decides the next ticks within its bounds and can be saved again.
    """
    document = copy.deepcopy(LEARNED)
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    policy = StartupAwarePolicy(WORKLOAD)
    try:
        policy.restore_state(document)
    except StateError:
        assert policy.export_state() == StartupAwarePolicy(WORKLOAD).export_state()
        return
    last = LEARNED["state"]["_last_decision_at"]
    for i in range(1, 4):
        snap = Snapshot(last + 5.0 * i, 30, 5, 40, 5.0, 5, (), service_times=(5.0,), startup_times=(30.0,))
        decision = policy.decide(snap)
        assert WORKLOAD.min_replicas <= decision.desired <= WORKLOAD.max_replicas
    json.dumps(policy.export_state(), allow_nan=False)
