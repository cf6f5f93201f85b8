"""Answering a burst between ticks: the two tests, the policy's answer, and the simulator's watch.

No I/O: the loop's side of the watch is in test_loop.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.engine.surge import late_already, poisson_tail
from autoscaler.engine.target import WorkloadSpec
from experiments.generators import Poisson, generate
from experiments.sim import SimConfig, SimResult, simulate

WORKLOAD = WorkloadSpec()


# ---- the two tests ----------------------------------------------------------------------------------


def test_late_already_compares_the_queue_with_what_ready_slots_start_within_the_budget() -> None:
    # SLO 10 s, service 5 s: a wait budget of 5 s, one more job per ready slot.
    assert not late_already(4, 4, 5.0, 10.0)
    assert late_already(5, 4, 5.0, 10.0)
    assert late_already(1, 0, 5.0, 10.0)  # no ready pod: any queue is late
    assert not late_already(8, 4, 2.0, 10.0)  # 2 s jobs: four starts per slot within 8 s
    assert late_already(1, 4, 10.0, 10.0)  # no wait budget at all


def test_poisson_tail_matches_the_sum_of_the_distribution() -> None:
    for count, mean in ((1, 0.5), (3, 2.0), (10, 4.0), (40, 10.0)):
        below = sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(count))
        assert poisson_tail(count, mean) == pytest.approx(1.0 - below, rel=1e-9, abs=1e-15)
    assert poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(1, 0.0) == 0.0


@given(count=st.integers(0, 500), mean=st.floats(0.0, 300.0), more=st.integers(1, 50))
def test_more_arrivals_are_never_less_surprising(count: int, mean: float, more: int) -> None:
    assert poisson_tail(count + more, mean) <= poisson_tail(count, mean)
    assert poisson_tail(count, mean) <= poisson_tail(count, mean + 1.0) + 1e-12


# ---- the policy's answer ------------------------------------------------------------------------------


def ready_pods(n: int) -> tuple[PodView, ...]:
    return tuple(PodView(f"p{i}", PodPhase.READY, 0.0, ready_at=30.0) for i in range(n))


def steady(policy: StartupAwarePolicy, rate: float, seconds: float, pods: int) -> float:
    """Tick ``policy`` on exactly ``rate`` jobs/s with ``pods`` ready and no queue; returns the time."""
    now = 0.0
    while now < seconds:
        policy.decide(Snapshot(now, 0, pods, round(rate * 5.0), 5.0, pods, ready_pods(pods)))
        now += 5.0
    return now


def between(now: float, arrivals: int, waiting: int, pods: int, after: float = 1.0) -> Snapshot:
    """What the watch shows ``after`` seconds into the tick that began at ``now - 5``."""
    return Snapshot(now - 5.0 + after, waiting, pods, arrivals, after, pods, ready_pods(pods))


def test_a_burst_between_ticks_is_answered_with_what_the_next_tick_would_order() -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    now = steady(policy, 2.0, 300.0, 12)
    answer = policy.surge(between(now, 150, 140, 12))
    assert answer is not None and answer.reason == "surge"
    assert answer.desired > 12 and answer.remove == ()
    assert answer.terms["surge_tail_probability"] < 1e-5 and answer.terms["surge_interval"] == 1.0


@pytest.mark.parametrize(
    ("arrivals", "waiting"),
    [
        (150, 10),  # a burst, but the ready pods start the queue in time
        (4, 20),  # a long queue (slow workers), but the arrivals are as forecast
    ],
)
def test_no_answer_unless_both_tests_say_surge(arrivals: int, waiting: int) -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    now = steady(policy, 2.0, 300.0, 12)
    assert policy.surge(between(now, arrivals, waiting, 12)) is None


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.0, 20.0),
    pods=st.integers(0, 30),
    arrivals=st.integers(0, 400),
    waiting=st.integers(0, 400),
    ticked=st.booleans(),
)
def test_the_gate_says_no_only_where_surge_has_no_answer(
    rate: float, pods: int, arrivals: int, waiting: int, ticked: bool
) -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    now = steady(policy, rate, 120.0, pods) if ticked else 5.0
    seen = between(now, arrivals, waiting, pods)
    if not policy.surge_possible(seen.waiting, seen.ready * seen.slots_per_pod):
        assert policy.surge(seen) is None
    # And it is the queue test, not "never": a long enough queue always passes it after a tick.
    assert policy.surge_possible(10 * pods + 1, pods) is ticked


def test_after_an_idle_spell_a_few_jobs_are_no_surge_but_a_busy_start_is() -> None:
    # Ticks of no traffic with no pods: the tick sized for zero. A job or four in the next second is
    # what one job per tick looks like; eleven (a 5 jobs/s start, as on the smooth scorecard trace)
    # is not, and is ordered at once.
    for few in (1, 4):
        policy = StartupAwarePolicy(WORKLOAD)
        now = steady(policy, 0.0, 120.0, 0)
        assert policy.surge(between(now, few, few, 0)) is None
    policy = StartupAwarePolicy(WORKLOAD)
    now = steady(policy, 0.0, 120.0, 0)
    answer = policy.surge(between(now, 11, 11, 0))
    assert answer is not None and answer.desired > 11


def test_no_answer_before_the_first_tick_or_on_stale_signals() -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    assert policy.surge(between(5.0, 150, 140, 1)) is None  # nothing sized for yet
    now = steady(policy, 2.0, 60.0, 12)
    stale = Snapshot(now - 4.0, 140, 12, 150, 1.0, 12, ready_pods(12), stale=True)
    assert policy.surge(stale) is None


def test_the_significance_knob_sets_what_counts_as_a_surge() -> None:
    strict = StartupAwarePolicy(WORKLOAD, StartupAwareConfig(surge_significance=1e-12))
    loose = StartupAwarePolicy(WORKLOAD, StartupAwareConfig(surge_significance=0.05))
    for policy in (strict, loose):
        now = steady(policy, 2.0, 300.0, 12)
    seen = between(now, 12, 20, 12)  # 12 jobs in a second against 2/s forecast: p ~ 1e-7
    assert strict.surge(seen) is None
    assert loose.surge(seen) is not None


@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(0.2, 20.0),
    arrivals=st.integers(0, 400),
    waiting=st.integers(0, 400),
    after=st.sampled_from([1.0, 2.0, 3.0, 4.0]),
)
def test_answering_changes_nothing_the_policy_has_learned(
    rate: float, arrivals: int, waiting: int, after: float
) -> None:
    policy = StartupAwarePolicy(WORKLOAD)
    now = steady(policy, rate, 200.0, 10)
    before = json.dumps(policy.export_state(), sort_keys=True)
    policy.surge(between(now, arrivals, waiting, 10, after))
    assert json.dumps(policy.export_state(), sort_keys=True) == before


@settings(max_examples=10, deadline=None)
@given(rate=st.floats(0.05, 40.0), seed=st.integers(0, 1000))
@example(rate=0.05078125, seed=142)  # the first job a minute in (see below)
def test_steady_poisson_traffic_is_answered_at_most_at_the_cold_start(rate: float, seed: int) -> None:
    class Counting(StartupAwarePolicy):
        answered: list[float]

        def surge(self, snapshot: Snapshot) -> Decision | None:
            answer = super().surge(snapshot)
            if answer is not None:
                self.answered.append(snapshot.now)
            return answer

    arrivals, _ = generate(Poisson(rate=rate, duration=1200.0), seed=seed)
    policy = Counting(WORKLOAD)
    policy.answered = []
    simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(WORKLOAD))
    # The cold start is the first job, not t = 0: at 0.05 jobs/s it can come a minute in, to a
    # pool already scaled to zero (rate 0.05078125, seed 142: first job at 60.4 s, answered at 61 s).
    assert [t for t in policy.answered if t > arrivals[0] + 60.0] == []


# ---- the simulator's watch ----------------------------------------------------------------------------


def burst_replay(watch: float, spec: str = "startup-aware") -> SimResult:
    """Two minutes at 1 job/s, then 300 jobs in the second just after the tick at 120 s."""
    quiet = np.arange(0.0, 120.0, 1.0)
    burst = np.linspace(120.5, 121.5, 300)
    arrivals = np.concatenate([quiet, burst, np.arange(122.0, 240.0, 1.0)])
    workload = WorkloadSpec(watch_seconds=watch)
    return simulate(arrivals, np.full(len(arrivals), 5.0), make_policy(spec, workload), SimConfig(workload))


def test_the_watch_orders_pods_for_a_burst_before_the_next_tick() -> None:
    watched, ticks_only = burst_replay(1.0), burst_replay(0.0)
    created = watched.pod_created[watched.pod_created > 120.0]
    assert created.size and created.min() == 121.0  # the first watch into the burst, 4 s before the tick
    assert np.all(ticks_only.pod_created % 5.0 == 0.0)
    late_watched = int(np.sum(watched.latency > 10.0))
    late_ticks = int(np.sum(ticks_only.latency > 10.0))
    assert late_watched < late_ticks
    # The timeline stays a record of ticks: at 120 s both runs had what that tick decided.
    at = np.flatnonzero(watched.timeline.times == 120.0)
    assert watched.timeline.replicas[at] == ticks_only.timeline.replicas[at]


@pytest.mark.parametrize("spec", ["keda", "kpa", "static:3"])
def test_policies_without_a_surge_answer_run_exactly_as_without_the_watch(spec: str) -> None:
    watched, ticks_only = burst_replay(1.0, spec), burst_replay(0.0, spec)
    assert np.array_equal(watched.start, ticks_only.start)
    assert np.array_equal(watched.pod_created, ticks_only.pod_created)


class Ungated:
    """The startup-aware policy seen only as Policy and SurgeResponder: the simulator cannot ask the gate."""

    def __init__(self, workload: WorkloadSpec) -> None:
        self._policy = StartupAwarePolicy(workload)

    @property
    def name(self) -> str:
        return self._policy.name

    def decide(self, snapshot: Snapshot) -> Decision:
        return self._policy.decide(snapshot)

    def surge(self, snapshot: Snapshot) -> Decision | None:
        return self._policy.surge(snapshot)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000))
def test_the_gate_spares_the_simulator_pod_reads_and_changes_no_replay(seed: int) -> None:
    """Bursts on steady traffic, each just after a tick: every surge the watch answers is kept."""
    steady_jobs, _ = generate(Poisson(rate=3.0, duration=900.0), seed=seed)
    rng = np.random.default_rng(seed)
    bursts = [at + rng.uniform(0.0, 2.0, 200) for at in (200.5, 500.5, 700.5)]
    arrivals = np.sort(np.concatenate([steady_jobs, *bursts]))
    service = np.full(len(arrivals), 5.0)
    config = SimConfig(WORKLOAD)
    gated = simulate(arrivals, service, StartupAwarePolicy(WORKLOAD), config)
    ungated = simulate(arrivals, service, Ungated(WORKLOAD), config)
    assert np.count_nonzero(gated.pod_created % 5.0) > 0  # the watch did answer surges
    assert np.array_equal(gated.start, ungated.start)
    assert np.array_equal(gated.pod_created, ungated.pod_created)
    assert np.array_equal(gated.pod_exit, ungated.pod_exit)


def test_a_watch_as_long_as_the_tick_is_no_watch() -> None:
    assert not WorkloadSpec(watch_seconds=5.0).watching
    assert WorkloadSpec(watch_seconds=5.0).look_seconds == 5.0
    assert WorkloadSpec().look_seconds == 1.0
    with pytest.raises(ValueError, match="watch_seconds"):
        WorkloadSpec(watch_seconds=-1.0)
    same = burst_replay(5.0)
    assert np.array_equal(same.pod_created, burst_replay(0.0).pod_created)
