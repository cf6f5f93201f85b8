"""Invariants of the simulator and the oracle on random traces and random scaling decisions."""

from __future__ import annotations

from functools import partial

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import Decision, Snapshot
from autoscaler.engine.target import WorkloadSpec
from experiments.distributions import Fixed
from experiments.oracle import oracle_pod_seconds, warmup_bound, zero_wait_profile
from experiments.sim import SimConfig, SimResult, simulate
from tests.unit.test_sim import Scripted

# Times on a 1/4 s grid make ties (simultaneous arrivals, a slot freed as a job arrives) common.
quarter = st.integers(0, 80).map(lambda x: x / 4)


@st.composite
def traces(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    gaps = draw(st.lists(quarter, min_size=1, max_size=40))
    arrivals = np.cumsum([0.0, *gaps[1:]])
    service = draw(st.lists(st.integers(1, 60).map(lambda x: x / 4), min_size=len(gaps), max_size=len(gaps)))
    return arrivals, np.asarray(service)


def reference_fifo(arrivals: np.ndarray, service: np.ndarray, slots: int) -> list[float]:
    """Job i starts at max(arrival_i, earliest free slot): the textbook c-server FIFO queue."""
    free = [0.0] * slots
    starts = []
    for a, s in zip(arrivals.tolist(), service.tolist(), strict=True):
        k = free.index(min(free))
        start = max(a, free[k])
        free[k] = start + s
        starts.append(start)
    return starts


def config(slots: int, tick: float, startup: float, initial: int, max_replicas: int = 12) -> SimConfig:
    workload = WorkloadSpec(slots_per_pod=slots, tick_seconds=tick, max_replicas=max_replicas)
    return SimConfig(workload=workload, startup=Fixed(startup), initial_replicas=initial)


def check_invariants(result: SimResult, slots: int, startup: float | None = None, initial: int = 0) -> None:
    """What every replay must satisfy; with the fixed ``startup`` (and the ``initial`` pods warm at
    t = 0), also that no job starts without a Ready slot free for the whole of its service."""
    n = len(result.arrivals)
    assert len(result.start) == n and np.all(np.isfinite(result.start))
    assert result.completions_reported == n  # each job reported complete once, none twice
    assert np.all(result.start >= result.arrivals)
    assert np.all(result.latency >= result.service)
    assert np.all(np.diff(result.start) >= 0)  # FIFO: nobody overtakes
    assert result.end == float(np.max(result.finish))
    assert np.all(result.pod_exit >= result.pod_created)
    assert result.pod_seconds * slots >= float(np.sum(result.service)) * (1 - 1e-12)
    if startup is not None:
        check_capacity(result, slots, startup, initial)


def check_capacity(result: SimResult, slots: int, startup: float, initial: int) -> None:
    """At each job's start, the jobs in service (started, not finished) fit the slots of the pods
    Ready then and not yet gone. ``latency >= service`` holds by definition (latency is wait plus
    service); this is what shows that a job really held its slot for its whole service time."""
    ready = result.pod_created + startup
    ready[:initial] = result.pod_created[:initial]
    served = result.pod_exit > ready  # pods gone before Ready never served
    finish = np.sort(result.finish)
    ready_sorted, exits = np.sort(ready[served]), np.sort(result.pod_exit[served])
    for at in result.start:
        in_service = np.searchsorted(result.start, at, "right") - np.searchsorted(finish, at, "right")
        serving = np.searchsorted(ready_sorted, at + 1e-9, "right") - np.searchsorted(exits, at, "right")
        assert in_service <= slots * serving, (at, in_service, serving)


@settings(max_examples=80, deadline=None)
@given(
    trace=traces(),
    slots=st.integers(1, 3),
    tick=st.sampled_from([1.0, 2.5, 5.0]),
    startup=st.sampled_from([0.0, 3.0, 30.0]),
    initial=st.integers(0, 3),
    script=st.lists(st.integers(0, 8), min_size=1, max_size=12).filter(any),
)
def test_random_scaling_never_loses_duplicates_or_shortcuts_a_job(
    *,
    trace: tuple[np.ndarray, np.ndarray],
    slots: int,
    tick: float,
    startup: float,
    initial: int,
    script: list[int],
) -> None:
    arrivals, service = trace
    # Each script entry holds for 40 s, longer than any startup here, so ordered pods get ready
    # and the cycle guarantees progress (a flapping policy is the stall guard's business).
    policy = Scripted(lambda s: script[int(s.now // 40) % len(script)])
    result = simulate(arrivals, service, policy, config(slots, tick, startup, initial))
    check_invariants(result, slots, startup, initial)
    # Every job's service time reported once (a count alone passes a job reported twice and one
    # never), and none before it finished: by each tick, no more reports than jobs done by then.
    reported = [t for s in policy.seen for t in s.service_times]
    assert sorted(reported) == sorted(service.tolist())
    finished = np.sort(result.finish)
    so_far = 0
    for snap in policy.seen:
        so_far += len(snap.service_times)
        assert so_far <= int(np.searchsorted(finished, snap.now, side="right"))
    if np.all(result.wait == 0):
        # A run that never made anyone wait cannot beat the oracle, but for the warm pods it got free.
        oracle = oracle_pod_seconds(arrivals, service, slots, startup)
        assert oracle <= result.pod_seconds + initial * startup + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    trace=traces(),
    floor=st.integers(0, 4),
    cap=st.integers(4, 8),
    script=st.lists(st.integers(0, 12), min_size=1, max_size=12).filter(any),
)
def test_every_count_applied_is_within_the_workloads_bounds(
    *, trace: tuple[np.ndarray, np.ndarray], floor: int, cap: int, script: list[int]
) -> None:
    # The daemon's loop holds any policy's count inside min..max_replicas (within_bounds), so a
    # replay must too, whatever the policy asks: below the floor, above the cap, or in between.
    arrivals, service = trace
    policy = Scripted(lambda s: script[int(s.now // 40) % len(script)])
    workload = WorkloadSpec(tick_seconds=5.0, min_replicas=floor, max_replicas=cap)
    result = simulate(arrivals, service, policy, SimConfig(workload=workload, startup=Fixed(3.0)))
    check_invariants(result, 1, 3.0, initial=1)
    replicas = result.timeline.replicas
    assert np.all((replicas >= floor) & (replicas <= cap))
    asked = [min(max(script[int(s.now // 40) % len(script)], floor), cap) for s in policy.seen]
    assert replicas.tolist() == asked[: len(replicas)]  # exactly the bounded ask, tick by tick


@settings(max_examples=60, deadline=None)
@given(trace=traces(), slots=st.integers(1, 3), replicas=st.integers(1, 4), tick=st.sampled_from([1.0, 5.0]))
def test_static_pool_equals_the_reference_fifo(
    trace: tuple[np.ndarray, np.ndarray], slots: int, replicas: int, tick: float
) -> None:
    arrivals, service = trace
    policy = make_policy(f"static:{replicas}", WorkloadSpec())
    result = simulate(arrivals, service, policy, config(slots, tick, 30.0, replicas))
    assert result.start.tolist() == reference_fifo(arrivals, service, slots * replicas)
    assert result.pod_seconds == replicas * result.end
    check_invariants(result, slots, 30.0, replicas)


@settings(max_examples=40, deadline=None)
@given(trace=traces(), slots=st.integers(1, 3), policy=st.sampled_from(["keda", "kpa", "startup-aware"]))
def test_real_policies_keep_the_invariants(
    trace: tuple[np.ndarray, np.ndarray], slots: int, policy: str
) -> None:
    arrivals, service = trace
    sim = config(slots, 5.0, 10.0, 1)
    result = simulate(arrivals, service, make_policy(policy, sim.workload), sim)
    check_invariants(result, slots, 10.0, initial=1)


@settings(max_examples=60, deadline=None)
@given(trace=traces(), slots=st.integers(1, 3), startup=st.sampled_from([0.0, 2.0, 30.0]))
def test_oracle_between_the_work_and_a_static_peak_pool(
    trace: tuple[np.ndarray, np.ndarray], slots: int, startup: float
) -> None:
    arrivals, service = trace
    oracle = oracle_pod_seconds(arrivals, service, slots, startup)
    peak = int(zero_wait_profile(arrivals, service, slots).pods.max())
    end = float(np.max(arrivals + service))
    assert float(np.sum(service)) / slots <= oracle + 1e-9
    assert oracle <= peak * (end + startup) + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    trace=traces(),
    slots=st.integers(1, 3),
    startup=st.sampled_from([0.0, 3.0, 30.0]),
    initial=st.integers(0, 3),
    slo=st.sampled_from([2.0, 10.0, 40.0]),
    script=st.lists(st.integers(0, 8), min_size=1, max_size=12).filter(any),
    cap=st.integers(3, 12),
)
def test_no_policy_beats_the_warmup_bound(
    *,
    trace: tuple[np.ndarray, np.ndarray],
    slots: int,
    startup: float,
    initial: int,
    slo: float,
    script: list[int],
    cap: int,
) -> None:
    arrivals, service = trace  # the first job arrives at t=0, the first tick
    policy = Scripted(lambda s: script[int(s.now // 40) % len(script)])
    result = simulate(arrivals, service, policy, config(slots, 5.0, startup, initial, max_replicas=cap))
    attainment = float(np.mean(result.latency <= slo))
    bound = partial(warmup_bound, arrivals, service, slots=slots, initial_pods=initial, startup=startup)
    assert attainment <= bound(look_seconds=5.0, slo=slo, max_pods=cap) + 1e-12
    capped = bound(look_seconds=5.0, slo=slo, max_pods=cap)
    assert capped <= bound(look_seconds=5.0, slo=slo) + 1e-12  # a cap never helps


class ScriptedWatch(Scripted):
    """Follows its script once it has seen a job, at ticks and at the watch's looks between them."""

    def __init__(self, script: list[int]) -> None:
        self.seen_a_job = False
        super().__init__(self.follow)
        self.script = script

    def follow(self, snapshot: Snapshot) -> int:
        self.seen_a_job = self.seen_a_job or snapshot.arrivals > 0
        if not self.seen_a_job:
            return snapshot.current_replicas
        return self.script[int(snapshot.now // 40) % len(self.script)]

    def surge(self, snapshot: Snapshot) -> Decision | None:
        return self.decide(snapshot)


@settings(max_examples=60, deadline=None)
@given(
    trace=traces(),
    startup=st.sampled_from([3.0, 4.0, 30.0]),
    watch=st.sampled_from([0.5, 1.0, 2.0, 2.5]),  # 2 s: looks restart at each 5 s tick
    script=st.lists(st.integers(0, 8), min_size=1, max_size=12).filter(any),
)
# Four jobs at once: pods ordered at the first look serve all in time, at the first tick only two.
@example(trace=(np.zeros(4), np.full(4, 5.0)), startup=3.0, watch=1.0, script=[4])
# Jobs at 4.5 s are seen at the 5 s tick, not at the 6 s a 2 s grid from 0 gives: pods ready at
# 9 s start them in time, which the bound, assuming 10 s, called impossible.
@example(trace=(np.full(4, 4.2), np.full(4, 5.0)), startup=4.0, watch=2.0, script=[4])
def test_a_watch_between_ticks_never_beats_the_bound_at_its_own_interval(
    trace: tuple[np.ndarray, np.ndarray], startup: float, watch: float, script: list[int]
) -> None:
    arrivals, service = trace
    arrivals = arrivals + 0.3  # the first job lands between looks, so when it is seen matters
    policy = ScriptedWatch(script)
    workload = WorkloadSpec(max_replicas=8, watch_seconds=watch)
    sim = SimConfig(workload=workload, startup=Fixed(startup), initial_replicas=1)
    result = simulate(arrivals, service, policy, sim)
    check_invariants(result, 1, startup, initial=1)
    attainment = float(np.mean(result.latency <= 10.0))
    bound = partial(warmup_bound, arrivals, service, slots=1, initial_pods=1, startup=startup, slo=10.0)
    at_looks = bound(look_seconds=workload.look_seconds, tick_seconds=workload.tick_seconds, max_pods=8)
    assert attainment <= at_looks + 1e-12
    assert at_looks >= bound(look_seconds=5.0, max_pods=8) - 1e-12
