"""The baselines, step by step against the upstream controllers' stated rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autoscaler.config import PolicyConfig
from autoscaler.engine.baselines import KedaConfig, KedaPolicy, KpaConfig, KpaPolicy, StaticPolicy
from autoscaler.engine.snapshot import PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec

WORKLOAD = WorkloadSpec(max_replicas=200, min_replicas=0)
ON_ZERO = KedaConfig(sync_offset=0.0)
"""A sync grid through t = 0, so the steps below read as multiples of 15 s."""


def snap(now: float, waiting: int, current: int, *, in_flight: int = 0, ready: int | None = None) -> Snapshot:
    ready = current if ready is None else ready
    pods = tuple(PodView(f"p{i}", PodPhase.READY, 0.0, ready_at=0.0) for i in range(ready))
    return Snapshot(now, waiting, in_flight, 0, 5.0, current, pods=pods)


class TestKeda:
    def test_desired_is_queue_over_list_length_within_the_up_limit(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        assert keda.decide(snap(0, 30, 4)).desired == 6  # ceil(30 / 5), within max(8, 8)
        keda = KedaPolicy(WORKLOAD, KedaConfig(list_length=10, sync_offset=0.0))
        assert keda.decide(snap(0, 31, 2)).desired == 4  # ceil(31 / 10)

    def test_tolerance_keeps_current_within_ten_percent(self) -> None:
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 21, 4)).desired == 4  # ratio 1.05
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 22, 4)).desired == 4  # ratio 1.10, boundary holds
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 23, 4)).desired == 5  # ratio 1.15
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 18, 4)).desired == 4  # ratio 0.90

    def test_syncs_every_15_seconds_and_repeats_itself_in_between(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        assert keda.decide(snap(0, 50, 1)).desired == 5
        for now in (5.0, 10.0):
            decision = keda.decide(snap(now, 0, 5))
            assert (decision.desired, decision.reason) == (5, "hpa-between-syncs")
        assert keda.decide(snap(15, 100, 5)).desired == 10
        assert keda.decide(snap(20, 1000, 10)).desired == 10

    def test_sync_grid_is_independent_of_a_slower_tick(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        keda.decide(snap(0, 10, 2))
        assert keda.decide(snap(10, 100, 2)).reason == "hpa-between-syncs"
        assert keda.decide(snap(20, 100, 2)).reason != "hpa-between-syncs"  # the 15 s sync, seen late
        assert keda.decide(snap(30, 100, 4)).reason != "hpa-between-syncs"  # and the 30 s one

    def test_sync_offset_shifts_the_grid_and_holds_before_the_first_sync(self) -> None:
        keda = KedaPolicy(WORKLOAD, KedaConfig(sync_offset=10.0))
        for now in (0.0, 5.0):
            assert keda.decide(snap(now, 50, 3)).desired == 3
        assert keda.decide(snap(10, 50, 3)).desired == 7
        assert keda.decide(snap(20, 500, 7)).reason == "hpa-between-syncs"
        assert keda.decide(snap(25, 500, 7)).desired == 14

    def test_by_default_the_first_sync_is_one_control_tick_in(self) -> None:
        keda = KedaPolicy(WORKLOAD)  # 5 s ticks: the grid is 5, 20, 35, ...
        assert keda.decide(snap(0, 50, 3)).reason == "hpa-between-syncs"
        assert keda.decide(snap(5, 50, 3)).desired == 7
        assert keda.decide(snap(15, 500, 7)).reason == "hpa-between-syncs"
        assert keda.decide(snap(20, 500, 7)).desired == 14
        one_second = KedaPolicy(WorkloadSpec(tick_seconds=1.0, min_replicas=0))
        assert one_second.decide(snap(0, 50, 3)).reason == "hpa-between-syncs"
        assert one_second.decide(snap(1, 50, 3)).desired == 7
        # A tick as long as the sync period lands every sync on the grid through t = 0.
        assert KedaPolicy(WorkloadSpec(tick_seconds=15.0, min_replicas=0)).decide(snap(0, 50, 3)).desired == 7
        with pytest.raises(ValueError, match="sync_offset < sync_period"):
            KedaConfig(sync_offset=15.0)

    def test_scale_up_limit_is_max_of_double_and_plus_four_per_period(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        steps = [(1, 5), (5, 10), (10, 20), (20, 40), (40, 80), (80, 160), (160, 200)]
        for i, (current, expected) in enumerate(steps):
            decision = keda.decide(snap(15.0 * i, 10_000, current))
            assert decision.desired == expected
            assert decision.reason == "hpa-scale-up-limit" or expected == 200

    def test_scale_down_waits_for_the_highest_recommendation_in_300_seconds(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        assert keda.decide(snap(0, 50, 10)).desired == 10
        assert keda.decide(snap(105, 30, 10)).desired == 10  # recommends 6, held by the 10 at t=0
        for now in range(120, 300, 15):
            decision = keda.decide(snap(now, 0, 10))
            assert (decision.desired, decision.reason) == (10, "hpa-scale-down-stabilization")
        assert keda.decide(snap(300, 0, 10)).desired == 6  # t=0 left the window; t=105 still in
        assert keda.decide(snap(390, 0, 6)).desired == 6
        assert keda.decide(snap(405, 0, 6)).desired == 1  # never below minReplicas 1

    def test_never_below_one_and_activates_from_zero(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        keda.decide(snap(0, 0, 1))  # held by its own initial recommendation of 1
        decision = keda.decide(snap(300, 0, 1))
        assert (decision.desired, decision.reason) == (1, "hpa-min-replicas")
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 0, 0)).desired == 1
        assert KedaPolicy(WORKLOAD, ON_ZERO).decide(snap(0, 40, 0)).desired == 1  # below min: min first

    def test_the_first_sync_holds_the_count_it_finds_for_a_window(self) -> None:
        # recordInitialRecommendation runs on the behavior path too: an HPA created over 10 pods
        # with an empty queue keeps them for the 300 s scale-down stabilization window.
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        for now in range(0, 300, 15):
            decision = keda.decide(snap(now, 0, 10))
            assert (decision.desired, decision.reason) == (10, "hpa-scale-down-stabilization")
        assert keda.decide(snap(300, 0, 10)).desired == 1

    def test_never_names_pods_and_holds_on_stale_signals(self) -> None:
        keda = KedaPolicy(WORKLOAD, ON_ZERO)
        assert keda.decide(snap(0, 0, 7)).remove == ()
        stale = Snapshot(15, 500, 0, 0, 5.0, 3, stale=True)
        assert keda.decide(stale).desired == 3

    def test_above_max_is_clamped(self) -> None:
        assert KedaPolicy(WorkloadSpec(max_replicas=10), ON_ZERO).decide(snap(0, 0, 12)).desired == 10

    def test_config_validation(self) -> None:
        with pytest.raises(ValueError, match="list_length > 0"):
            KedaConfig(list_length=0)
        with pytest.raises(ValueError, match="hpa_behavior 'defaults' or 'none'"):
            KedaConfig(hpa_behavior="legacy")


class TestKedaWithoutHpaBehavior:
    """An HPA with no ``behavior`` field, what KEDA creates for a plain ScaledObject: the HPA
    controller's older normalize-desired-replicas rules (horizontal.go), not the behavior defaults."""

    NONE = KedaConfig(sync_offset=0.0, hpa_behavior="none")

    def test_scale_up_is_limited_to_double_or_four_per_sync(self) -> None:
        keda = KedaPolicy(WORKLOAD, self.NONE)
        steps = [(1, 4), (4, 8), (8, 16), (16, 32)]  # with behavior defaults: 5, 10, 20, 40
        for i, (current, expected) in enumerate(steps):
            decision = keda.decide(snap(15.0 * i, 10_000, current))
            assert (decision.desired, decision.reason) == (expected, "hpa-scale-up-limit")

    def test_the_highest_recent_recommendation_also_pulls_the_count_up(self) -> None:
        keda = KedaPolicy(WORKLOAD, self.NONE)
        assert keda.decide(snap(0, 500, 10)).desired == 20  # recommends 100, limited to 2 x 10
        # The queue now asks for 25; the 100 of 15 s ago is in the window: up to 2 x 20 = 40.
        assert keda.decide(snap(15, 125, 20)).desired == 40
        with_defaults = KedaPolicy(WORKLOAD, ON_ZERO)
        with_defaults.decide(snap(0, 500, 10))
        assert with_defaults.decide(snap(15, 125, 20)).desired == 25

    def test_the_first_sync_holds_the_count_it_finds_for_a_window(self) -> None:
        keda = KedaPolicy(WORKLOAD, self.NONE)
        for now in range(0, 300, 15):
            decision = keda.decide(snap(now, 0, 10))
            assert (decision.desired, decision.reason) == (10, "hpa-scale-down-stabilization")
        assert keda.decide(snap(300, 0, 10)).desired == 1  # the initial 10 has left the window


class TestKpa:
    def test_target_is_slots_times_utilization(self) -> None:
        assert KpaPolicy(WorkloadSpec(slots_per_pod=4)).target == pytest.approx(2.8)
        assert KpaPolicy(WORKLOAD, KpaConfig(target=3)).target == 3

    def test_desired_is_stable_average_over_target(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0))
        assert kpa.decide(snap(0, 3, 4, in_flight=1)).desired == 4  # concurrency = waiting + in-flight
        assert kpa.decide(snap(5, 0, 4, in_flight=2)).desired == 3  # mean of 4 and 2

    def test_stable_window_forgets_after_60_seconds(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0))
        kpa.decide(snap(0, 10, 10))
        for now in range(5, 60, 5):
            kpa.decide(snap(now, 0, 10, in_flight=10))
        assert kpa.decide(snap(60, 0, 10, in_flight=10)).desired == 10

    def test_panic_scales_on_the_short_window_and_never_down_while_panicking(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0))
        for now in range(0, 60, 5):
            kpa.decide(snap(now, 0, 2, in_flight=2))
        burst = kpa.decide(snap(60, 40, 2, in_flight=2))  # 6 s window: (2 + 42) / 2 = 22 >= 2 x 2
        assert burst.reason == "kpa-panic" and burst.desired == 22
        # Still over the threshold at t=65 (the 6 s window holds t=60 and t=65; 2 pods ready).
        calm = kpa.decide(snap(65, 0, 22, in_flight=2, ready=2))
        assert calm.reason == "kpa-panic" and calm.desired == 22
        for now in range(70, 130, 5):  # below the threshold now, but panic lasts 60 s past t=65
            assert kpa.decide(snap(now, 0, 22, in_flight=2, ready=22)).desired == 22
        after = kpa.decide(snap(130, 0, 22, in_flight=2, ready=22))
        assert after.reason == "kpa-stable" and after.desired < 22

    def test_scale_down_at_most_halves_and_may_reach_min(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0, stable_window=6.0, panic_window=6.0))
        assert kpa.decide(snap(0, 0, 10)).desired == 5
        assert kpa.decide(snap(5, 0, 5)).desired == 2
        assert kpa.decide(snap(10, 0, 2)).desired == 1
        assert kpa.decide(snap(15, 0, 1)).desired == 0
        floor = KpaPolicy(WorkloadSpec(min_replicas=2), KpaConfig(stable_window=6.0, panic_window=6.0))
        assert floor.decide(snap(0, 0, 1)).desired == 2

    @pytest.mark.parametrize(
        ("options", "rule"),
        [
            ({"panic_window": 1e-10}, "1 <= panic_window <= stable_window"),
            ({"stable_window": 1e-10, "panic_window": 1e-10}, "stable_window >= 6"),
            ({"panic_window": 0.5}, "1 <= panic_window <= stable_window"),
            ({"stable_window": 5.0, "panic_window": 5.0}, "stable_window >= 6"),
        ],
    )
    def test_windows_shorter_than_knative_allows_are_refused_by_name(
        self, options: dict[str, float], rule: str
    ) -> None:
        """Knative refuses a stable window below 6 s and a panic window below its 1 s bucket. A window
        of 1e-10 s was admitted and held no sample (below the clock tolerance): ZeroDivisionError."""
        with pytest.raises(ValueError, match=rule):
            KpaConfig(**options)
        with pytest.raises(ValidationError, match=f"policy 'kpa': KpaConfig needs .*{rule}"):
            PolicyConfig.model_validate({"name": "kpa", **options})  # the daemon's config says so too

    def test_the_shortest_windows_knative_allows_average_the_latest_sample(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0, stable_window=6.0, panic_window=1.0))
        assert kpa.decide(snap(0, 3, 1)).desired == 3
        assert kpa.decide(snap(5, 9, 3)).desired == 9  # panic: the 1 s window holds t=5 alone

    def test_scale_up_rate_is_relative_to_ready_pods(self) -> None:
        kpa = KpaPolicy(WORKLOAD, KpaConfig(target=1.0, max_scale_up_rate=3.0))
        assert kpa.decide(snap(0, 100, 2, ready=2)).desired == 6


def test_static_is_static() -> None:
    policy = StaticPolicy(40)
    assert policy.name == "static:40"
    assert {policy.decide(snap(t, w, c)).desired for t, w, c in [(0, 0, 1), (5, 999, 40), (9, 0, 80)]} == {40}
    with pytest.raises(ValueError):
        StaticPolicy(0)


def test_keda_first_tick_on_an_epoch_clock_lands_on_the_sync_grid() -> None:
    policy = KedaPolicy(WorkloadSpec(), ON_ZERO)
    now = 1_795_000_008.0  # a live daemon's clock: epoch seconds, 3 s past a 15 s grid point
    first = policy.decide(Snapshot(now, 100, 0, 100, 5.0, 1))
    assert first.desired > 1
    # Between syncs the HPA holds; the next sync is the next grid point (…020), not one period per call.
    held = policy.decide(Snapshot(now + 11.0, 400, 0, 0, 5.0, first.desired))
    assert (held.reason, held.terms["next_sync"]) == ("hpa-between-syncs", 1_795_000_020.0)
    assert policy.decide(Snapshot(now + 12.0, 400, 0, 0, 5.0, first.desired)).reason != "hpa-between-syncs"


def test_keda_scale_down_limit_never_ends_above_the_current_count() -> None:
    """Kubernetes caps the scale-down limit at the current replicas (convertDesiredReplicasWith
    BehaviorRate). Without the cap, a 50 %-per-60 s policy whose period began at 10 replicas
    answered an empty queue at 2 (someone scaled it down) with 3, and one clamped from 50 to a
    maximum of 20 asked for 25."""
    config = KedaConfig(scale_down_percent=50.0, scale_down_period=60.0, scale_down_stabilization=0.0)

    def at(now: float, current: int) -> Snapshot:
        return Snapshot(now=now, waiting=0, in_flight=0, arrivals=0, interval=5.0, current_replicas=current)

    keda = KedaPolicy(WorkloadSpec(max_replicas=200), config)
    assert keda.decide(at(5.0, 10)).desired == 5  # 50 % per 60 s: 10 -> 5
    assert keda.decide(at(20.0, 2)).desired == 2  # HPA holds 2
    clamped = KedaPolicy(WorkloadSpec(max_replicas=20), config)
    assert clamped.decide(at(5.0, 50)).desired == 20
    assert clamped.decide(at(20.0, 20)).desired == 20
