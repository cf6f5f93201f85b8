"""A wall clock that steps (an NTP correction) must not freeze or stretch the control loop's windows.

The loop's ``now`` is on a :class:`Timeline` (wall clock at start + monotonic time since) and every
wall-clock timestamp it reads is moved onto it. These tests step a fake wall clock while a fake
monotonic clock keeps counting, with in-memory sources and targets (no I/O).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.engine.snapshot import Decision, PodPhase, PodView
from autoscaler.engine.standing_pool import StandingPool
from autoscaler.engine.target import WorkloadSpec
from autoscaler.loop import LoopSettings, TargetLoop, TickReport
from autoscaler.targets.base import ActGate, TargetState
from autoscaler.timeline import Timeline
from tests.unit.doubles import TICK, Clock, MemorySource, MemoryStateStore, MemoryTarget
from tests.unit.test_loop import ScriptedPolicy

STEP = 600.0
"""An NTP correction: the wall clock was ten minutes ahead."""


@dataclass
class Clocks:
    """A wall clock that can step and a monotonic one that only ever counts real seconds."""

    wall: Clock = field(default_factory=lambda: Clock(1000.0))
    mono: Clock = field(default_factory=lambda: Clock(50.0))

    def advance(self, seconds: float = TICK) -> None:
        self.wall.advance(seconds)
        self.mono.advance(seconds)

    def step(self, seconds: float) -> None:
        """The wall clock jumps by ``seconds`` (negative: back); no real time passes."""
        self.wall.advance(seconds)


class PodTarget(MemoryTarget):
    """Keeps one pod per replica: new ones Ready at once, stamped with the wall clock; removed ones gone.

    The policy lets pods go only by name, so a scale-down needs them.
    """

    def scale(self, decision: Decision, state: TargetState, may_act: ActGate | None = None) -> int | None:
        scaled = super().scale(decision, state, may_act)
        pods = [p for p in self.pods if p.name not in decision.remove][: self.replicas]
        names = (f"pod-{i}" for i in itertools.count(len(self.scaled) * 1000))
        while len(pods) < self.replicas:
            pods.append(PodView(next(names), PodPhase.READY, created_at=self.clock(), ready_at=self.clock()))
        self.pods = pods
        return scaled


def loop_on(
    clocks: Clocks,
    policy: ScriptedPolicy | StartupAwarePolicy,
    target: MemoryTarget | None = None,
    **kwargs: object,
) -> tuple[TargetLoop, MemorySource, MemoryTarget]:
    """A loop whose source and target read the wall clock, as Redis and Kubernetes do."""
    source, target = MemorySource(clocks.wall), target or PodTarget(clocks.wall, replicas=1)
    workload = policy.workload if isinstance(policy, StartupAwarePolicy) else WorkloadSpec(tick_seconds=TICK)
    loop = TargetLoop(
        "t",
        source,
        target,
        policy,
        LoopSettings(workload),
        clock=clocks.wall,
        monotonic=clocks.mono,
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )
    return loop, source, target


# ---- the timeline itself -----------------------------------------------------------------------------


def test_the_timeline_keeps_counting_real_seconds_when_the_wall_clock_steps() -> None:
    clocks = Clocks()
    timeline = Timeline(clocks.wall, clocks.mono)
    assert timeline.now() == 1000.0 and timeline.offset() == 0.0  # epoch seconds while nothing steps
    clocks.advance(5.0)
    clocks.step(-STEP)
    clocks.advance(5.0)
    assert timeline.now() == 1010.0
    assert timeline.offset() == STEP
    # A pod the wall clock says was created 3 s ago is 3 s old on the timeline too.
    assert timeline.now() - timeline.from_wall(clocks.wall() - 3.0) == 3.0
    assert timeline.to_wall(timeline.now()) == clocks.wall()
    clocks.step(2 * STEP)  # and forward: the timeline is now behind the wall clock
    assert timeline.now() == 1010.0 and timeline.offset() == -STEP


def test_the_timeline_moves_on_to_a_later_time_but_never_back() -> None:
    clocks = Clocks()
    timeline = Timeline(clocks.wall, clocks.mono)
    assert timeline.not_before(900.0) == 0.0 and timeline.now() == 1000.0
    assert timeline.not_before(1600.0) == 600.0 and timeline.now() == 1600.0
    clocks.advance(5.0)
    assert timeline.now() == 1605.0 and timeline.offset() == 600.0


# ---- the loop on a stepping wall clock -------------------------------------------------------------


def test_a_wall_clock_step_back_neither_moves_now_back_nor_changes_a_pods_age() -> None:
    clocks = Clocks()
    policy = ScriptedPolicy(desired=1)
    loop, source, target = loop_on(clocks, policy)
    reports: list[TickReport] = []
    for i in range(4):
        clocks.advance()
        if i == 2:
            clocks.step(-STEP)
            # Pods the target reads after the step carry the wall clock as it reads now.
            target.pods = [
                PodView("new", PodPhase.STARTING, created_at=clocks.wall() - 8.0),
                PodView("warm", PodPhase.READY, clocks.wall() - 90.0, ready_at=clocks.wall() - 30.0),
            ]
        assert source.arrivals_total is not None
        source.arrivals_total += 10
        reports.append(loop.tick())
    nows = [s.now for s in policy.seen]
    assert nows == [1005.0, 1010.0, 1015.0, 1020.0]  # one tick apart, through the step
    last = policy.seen[-1]
    ages = {p.name: last.now - p.created_at for p in last.pods}
    assert ages == {"new": 13.0, "warm": 95.0}  # 8 s and 90 s old one tick ago
    assert [p.ready_at - p.created_at for p in last.pods if p.ready_at is not None] == [60.0]
    # The queue's reads move with it: fresh signals, every interval one tick, no arrival lost.
    assert [(s.stale, s.interval, s.arrivals) for s in policy.seen[1:]] == [(False, TICK, 10)] * 3
    # The outside world (metrics, probes) keeps the wall clock.
    assert reports[-1].now == clocks.wall() and reports[-1].signal_age == 0.0


def test_a_wall_clock_step_forward_does_not_make_the_signals_stale() -> None:
    clocks = Clocks()
    policy = ScriptedPolicy(desired=1)
    loop, _, _ = loop_on(clocks, policy)
    clocks.advance()
    loop.tick()
    clocks.advance()
    clocks.step(STEP)
    loop.tick()
    seen = [(s.now, s.stale, s.interval) for s in policy.seen]
    assert seen == [(1005.0, False, 0.0), (1010.0, False, TICK)]  # one tick apart, fresh


def test_the_watch_answers_a_surge_after_a_step_back() -> None:
    clocks = Clocks()
    policy = ScriptedPolicy(desired=1, surge_to=4)
    loop, source, _ = loop_on(clocks, policy)
    clocks.advance()
    loop.tick()
    clocks.step(-STEP)
    clocks.advance(1.0)
    source.waiting, source.arrivals_total = 30, 30
    report = loop.watch()
    assert report is not None and report.decision is not None and report.decision.desired == 4
    assert policy.surges[-1].now == 1006.0 and not policy.surges[-1].stale


def test_history_read_after_a_step_warms_the_forecaster_with_the_right_rate() -> None:
    clocks = Clocks()
    clocks.wall.now = clocks.mono.now = 10_000.0
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK))

    def history() -> tuple[list[float], list[float]]:
        now = clocks.wall()  # the source's clock: the wall clock as it reads now
        return [now - 600.0 + i * 0.5 for i in range(1200)], [5.0] * 50  # 2 jobs/s for ten minutes

    loop, _, _ = loop_on(clocks, policy, history=history)
    clocks.step(-STEP)
    loop.tick()
    assert policy.forecaster.forecast(10_000.0, 30.0, 1.6).mean == pytest.approx(2.0, rel=0.05)


# ---- end to end with the real policy -------------------------------------------------------------------

BURST = [0] * 6 + [4] * 6 + [0] * 40
"""Arrivals per tick: quiet, a 30 s burst, then quiet: the window holds the burst's pods for 35 s."""
AFTER_BURST = 12
"""The first quiet tick after the burst, while the scale-down window still holds its peak."""


def run_policy(step: float) -> list[int]:
    """The replica counts the real policy asks for over ``BURST``, the wall clock stepping at a tick."""
    clocks = Clocks()
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK, startup_seconds=30.0))
    loop, source, _ = loop_on(clocks, policy)
    desired: list[int] = []
    for i, arrivals in enumerate(BURST):
        clocks.advance()
        if i == AFTER_BURST:
            clocks.step(step)
        assert source.arrivals_total is not None
        source.arrivals_total += arrivals
        report = loop.tick()
        assert report.decision is not None
        desired.append(report.decision.desired)
    return desired


@pytest.mark.parametrize("step", [-STEP, STEP])
def test_a_wall_clock_step_changes_no_decision_of_the_real_policy(step: float) -> None:
    """Stepped back while the scale-down window holds the burst's peak, it held it ten minutes more;
    stepped forward, it let the pods go at once."""
    reference = run_policy(0.0)
    held = reference[AFTER_BURST]
    assert held > 1 and reference[AFTER_BURST + 1] == held and reference[-1] < held  # held, then let go
    assert run_policy(step) == reference


def test_a_restart_after_a_step_back_continues_the_saved_windows() -> None:
    """The saved state is on the old process's timeline, a step ahead of the new one's wall clock:
    started at the wall clock, the new process's ``now`` went back ten minutes, and the restored
    standing pool, refreshed last at a time still ahead, was not refreshed for those ten minutes."""
    clocks, store = Clocks(), MemoryStateStore()
    target = PodTarget(clocks.wall, replicas=1)  # the Deployment outlives the daemon
    nows: list[list[float]] = []
    pools: list[StandingPool] = []
    for process in range(2):
        policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK, startup_seconds=30.0))
        loop, source, _ = loop_on(clocks, policy, target, state_store=store)
        source.arrivals_total = 10_000  # the counter outlives the process
        nows.append([])
        ticks = BURST[: AFTER_BURST + 2] if process == 0 else BURST[AFTER_BURST + 2 :]
        for i, arrivals in enumerate(ticks):
            clocks.advance()
            if process == 0 and i == AFTER_BURST:
                clocks.step(-STEP)
            source.arrivals_total += arrivals
            report = loop.tick()
            assert report.snapshot is not None
            nows[-1].append(report.snapshot.now)
        assert loop.save_state(force=True)
        assert policy._pool is not None
        pools.append(policy._pool)
        clocks.mono.now = 0.0  # a new process: a new monotonic origin
    assert store.document is not None
    assert nows[1][0] >= nows[0][-1]  # never back, across the restart either
    # The restored pool refreshes every 30 s as before, on the first tick that is due.
    first, last = nows[1][0], nows[1][-1]
    refreshed = pools[1]._last_refresh
    assert refreshed is not None and last - 30.0 - TICK < refreshed <= last
    assert last - first > 30.0 + TICK
