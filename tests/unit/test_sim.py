"""The simulator, one mechanism at a time, on traces small enough to check by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from autoscaler.engine.snapshot import Decision, PodPhase, Snapshot
from autoscaler.engine.target import WorkloadSpec
from experiments.distributions import Fixed, LogNormal
from experiments.sim import MAX_TICKS, SimConfig, SimResult, SimulationError, TickLimitError, simulate


class Scripted:
    """A policy whose answer is a function of the snapshot; keeps every snapshot it saw."""

    def __init__(self, answer: Callable[[Snapshot], int | Decision]) -> None:
        self.answer = answer
        self.seen: list[Snapshot] = []

    @property
    def name(self) -> str:
        return "scripted"

    def decide(self, snapshot: Snapshot) -> Decision:
        self.seen.append(snapshot)
        answer = self.answer(snapshot)
        return answer if isinstance(answer, Decision) else Decision(answer, "scripted")

    def at(self, now: float) -> Snapshot:
        return next(s for s in self.seen if s.now == now)


def at_times(script: dict[float, int]) -> Callable[[Snapshot], int]:
    """Desired count ``script[now]`` at the listed ticks, otherwise hold the current count."""
    return lambda s: script.get(s.now, s.current_replicas)


def run(
    arrivals: list[float],
    service: list[float] | float,
    policy: Scripted,
    *,
    initial: int = 1,
    startup: float = 30.0,
    slots: int = 1,
    tick: float = 5.0,
    **config: float,
) -> SimResult:
    arr = np.asarray(arrivals, dtype=float)
    svc = np.full(len(arr), service, dtype=float) if isinstance(service, float) else np.asarray(service)
    workload = WorkloadSpec(slots_per_pod=slots, tick_seconds=tick, max_replicas=50)
    sim = SimConfig(workload=workload, startup=Fixed(startup), initial_replicas=initial, **config)  # type: ignore[arg-type]
    return simulate(arr, svc, policy, sim)


def test_fifo_on_one_warm_pod() -> None:
    result = run([0.0, 1.0, 2.0], 5.0, Scripted(lambda s: 1))
    assert result.start.tolist() == [0.0, 5.0, 10.0]
    assert result.latency.tolist() == [5.0, 9.0, 13.0]
    assert result.end == 15.0
    assert result.pod_seconds == 15.0  # one pod, t=0 until the last completion
    assert result.scale_events == 0


def test_slots_serve_jobs_side_by_side() -> None:
    result = run([0.0, 0.0, 0.0], 5.0, Scripted(lambda s: 1), slots=2)
    assert result.start.tolist() == [0.0, 0.0, 5.0]
    assert result.pod_seconds == 10.0


def test_new_pod_serves_only_after_its_startup() -> None:
    policy = Scripted(lambda s: 1)
    result = run([0.0], 5.0, policy, initial=0, startup=30.0)
    assert result.start.tolist() == [30.0]
    assert result.pod_seconds == 35.0  # billed from creation at t=0, startup included
    first = policy.at(0.0)
    assert (first.waiting, first.arrivals, first.current_replicas, first.pods) == (1, 1, 0, ())
    assert policy.at(5.0).pods[0].phase is PodPhase.STARTING
    assert policy.at(30.0).startup_times == (30.0,)
    assert policy.at(30.0).pods[0].busy_slots == 1
    assert policy.at(35.0).service_times == (5.0,)


def test_snapshot_counts_arrivals_per_interval_and_reports_each_completion_once() -> None:
    policy = Scripted(lambda s: 1)
    result = run([0.0, 3.0, 7.0, 12.0], 1.0, policy)
    assert [s.arrivals for s in policy.seen] == [1, 1, 1, 1]
    assert {s.interval for s in policy.seen} == {5.0}
    assert [len(s.service_times) for s in policy.seen] == [0, 2, 1, 1]
    assert result.completions_reported == 4
    assert policy.seen[-1].now >= result.end  # the last tick sees the last completion


def test_waiting_and_in_flight_at_a_tick() -> None:
    policy = Scripted(lambda s: 1)
    run([0.0, 1.0, 2.0, 3.0], 10.0, policy)
    snap = policy.at(5.0)
    assert (snap.waiting, snap.in_flight) == (3, 1)


def test_scale_down_drains_busy_pods_and_bills_them_until_they_finish() -> None:
    policy = Scripted(at_times({5.0: 0, 10.0: 1}))
    # Two warm pods: job 0 (20 s) keeps pod-0 busy, job 1 (1 s) leaves pod-1 idle by t=5.
    result = run([0.0, 0.0, 6.0], [20.0, 1.0, 2.0], policy, initial=2, startup=3.0)
    during = policy.at(10.0)
    assert during.current_replicas == 0
    assert [(p.name, p.phase, p.busy_slots) for p in during.pods] == [("pod-0", PodPhase.DRAINING, 1)]
    assert result.start.tolist() == [0.0, 0.0, 13.0]  # job 2 waits for the pod ordered at t=10
    assert result.pod_exit.tolist() == [20.0, 5.0, 20.0]  # pod-0 drained, pod-1 left idle at t=5
    assert result.pod_seconds == 20.0 + 5.0 + 10.0
    assert policy.at(20.0).service_times == (20.0,)
    assert all(p.name != "pod-0" for p in policy.at(20.0).pods)


def test_named_pods_go_first_even_when_busy() -> None:
    policy = Scripted(lambda s: Decision(1, "x", remove=("pod-0",)) if s.now == 5.0 else s.current_replicas)
    result = run([0.0], 20.0, policy, initial=2)
    assert result.pod_exit.tolist() == [20.0, 20.0]  # pod-0 drained its job; pod-1 stayed to the end
    assert policy.at(5.0 + 5.0).pods[0].phase is PodPhase.READY
    assert [p.phase for p in policy.at(10.0).pods] == [PodPhase.READY, PodPhase.DRAINING]


def test_default_removal_order_is_starting_then_idle_then_busy() -> None:
    policy = Scripted(at_times({0.0: 4, 5.0: 2, 10.0: 1}))
    # pod-0 busy (job of 30 s), pod-1 idle, pod-2 and pod-3 starting from t=0.
    result = run([0.0], 30.0, policy, initial=2, startup=30.0)
    exits = result.pod_exit.tolist()
    assert exits[2:] == [5.0, 5.0]  # both starting pods went first
    assert exits[1] == 10.0  # then the idle one
    assert exits[0] == 30.0  # the busy one stayed
    assert result.scale_events == 3


def test_same_seed_same_run_different_seed_different_run() -> None:
    def once(seed: int) -> SimResult:
        arrivals = np.arange(0.0, 300.0, 0.5)
        policy = Scripted(lambda s: min(20, 1 + s.waiting))
        workload = WorkloadSpec(max_replicas=50)
        config = SimConfig(workload=workload, startup=LogNormal(30.0, 45.0), seed=seed)
        return simulate(arrivals, np.full(len(arrivals), 5.0), policy, config)

    a, b, c = once(1), once(1), once(2)
    assert np.array_equal(a.start, b.start) and a.pod_seconds == b.pod_seconds
    assert not np.array_equal(a.start, c.start)


@pytest.mark.parametrize("flapping", [lambda s: 0, lambda s: int(s.now / 5) % 2])
def test_policy_never_readying_a_replica_is_reported_not_looped_forever(
    flapping: Callable[[Snapshot], int],
) -> None:
    with pytest.raises(SimulationError, match="no job started for 60 s"):
        run([0.0], 1.0, Scripted(flapping), initial=0, stall_seconds=60.0)


def test_a_pod_still_warming_up_is_no_stall() -> None:
    """Jobs waited 30,000 s for the only pod's admitted startup: the guard (6 h) called that a policy
    that "kept no replica long enough to become ready", though the pod was ready at 30,000 s."""
    result = run([0.0, 1.0, 1.0, 2.0, 10.0], 5.0, Scripted(lambda s: 1), initial=0, startup=30_000.0)
    assert result.start.tolist() == [30_000.0 + 5.0 * i for i in range(5)]
    assert result.pod_seconds == 30_025.0  # created at 0, five jobs of 5 s from 30,000 s


def test_a_drawn_startup_past_the_stall_limit_is_no_stall() -> None:
    """With startups drawn from a distribution, the longest one drawn is what the pods may take."""
    arr, svc = np.zeros(3), np.full(3, 5.0)
    config = SimConfig(startup=LogNormal(100.0, 150.0), initial_replicas=0, stall_seconds=60.0)
    result = simulate(arr, svc, Scripted(lambda s: 1), config)
    ready = LogNormal(100.0, 150.0).draw(np.random.default_rng(0), 1)[0]
    assert ready > 60.0 and result.start.tolist() == [ready, ready + 5.0, ready + 10.0]


def test_a_policy_that_drops_its_starting_pods_is_stopped_after_twice_the_longest_startup() -> None:
    with pytest.raises(SimulationError, match="no job started for 200 s"):
        run([0.0], 1.0, Scripted(lambda s: int(s.now / 5) % 2), initial=0, startup=100.0, stall_seconds=60.0)


def test_desired_is_clamped_to_the_workload_maximum() -> None:
    result = run([0.0], 1.0, Scripted(lambda s: 10_000), initial=1)
    assert result.max_replicas == 50


def test_desired_is_raised_to_the_workload_minimum_as_the_daemon_raises_it() -> None:
    # A policy asking for 1 pod, or none, under a floor of 4: the daemon's loop keeps 4 whichever
    # policy decided (within_bounds), and a replay must scale as the daemon would.
    arr = np.arange(0.0, 60.0, 2.0)
    workload = WorkloadSpec(tick_seconds=5.0, min_replicas=4, max_replicas=50)
    for ask in (0, 1):
        policy = Scripted(lambda s: ask)  # noqa: B023 (called within this iteration)
        result = simulate(arr, np.full(len(arr), 1.0), policy, SimConfig(workload=workload))
        assert result.timeline.replicas.min() == 4 and result.max_replicas == 4
        assert result.pod_exit.size == 4  # the initial pod was never let go, three were added


class Surging(Scripted):
    """A scripted policy that answers surges too (never with a scale-up), counting the looks."""

    def __init__(self) -> None:
        super().__init__(lambda s: 1)
        self.looks = 0

    def surge(self, snapshot: Snapshot) -> Decision | None:
        self.looks += 1
        return None


@pytest.mark.timeout(20)
def test_a_replay_past_its_tick_limit_stops_naming_the_tick() -> None:
    """A queue that drains far slower than the trace arrives took more ticks than any check of the
    trace foresaw; at a tiny tick it ran for hours."""
    with pytest.raises(TickLimitError, match=r"not ended after 1,000 ticks of 0\.001 s") as caught:
        run([0.0] * 20, 5.0, Scripted(lambda s: 1), tick=0.001, max_ticks=1000)
    assert (caught.value.tick_seconds, caught.value.looks) == (0.001, False)
    assert isinstance(caught.value, SimulationError)  # callers that catch those still do
    assert run([0.0] * 20, 5.0, Scripted(lambda s: 1), tick=0.1, max_ticks=1001).end == 100.0


@pytest.mark.timeout(20)
@pytest.mark.parametrize("watch", [1e-300, 5.0 / (MAX_TICKS + 1)])
def test_a_watch_that_would_look_without_end_in_one_tick_is_refused_before_the_first(watch: float) -> None:
    """At 1e-300 s the watch's first tick took 5e300 looks: the replay never ended, at any tick count."""
    arrivals = np.zeros(3)
    workload = WorkloadSpec(tick_seconds=5.0, watch_seconds=watch)
    policy = Surging()
    with pytest.raises(TickLimitError, match="looks") as caught:
        simulate(arrivals, np.full(3, 1.0), policy, SimConfig(workload=workload))
    assert caught.value.looks and caught.value.watch_seconds == watch and policy.seen == []


def test_a_watch_within_the_limit_still_looks() -> None:
    workload = WorkloadSpec(tick_seconds=5.0, watch_seconds=5.0 / MAX_TICKS * 1e5)
    policy = Surging()
    simulate(np.array([0.0, 6.0, 6.0]), np.full(3, 10.0), policy, SimConfig(workload=workload))
    assert policy.looks > 0  # jobs waited between ticks: the watch was shown them


@pytest.mark.parametrize(
    ("arrivals", "service"),
    [([], []), ([1.0, 0.0], [1.0, 1.0]), ([0.0], [-1.0]), ([0.0, 1.0], [1.0])],
)
def test_rejects_malformed_input(arrivals: list[float], service: list[float]) -> None:
    with pytest.raises(ValueError):
        simulate(np.asarray(arrivals), np.asarray(service), Scripted(lambda s: 1), SimConfig())
