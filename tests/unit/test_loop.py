"""The control loop's own logic, with in-memory implementations of OUR SignalSource/ScaleTarget/Policy
protocols (no Redis, no Kubernetes): snapshot building, holding on stale data, shadow and leader
gating, backoff, and the decision log line."""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass, field

import pytest

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec
from autoscaler.logs import JsonFormatter
from autoscaler.loop import STALE_TICKS, Backoff, LoopSettings, TargetLoop, TickReport
from autoscaler.targets.base import TargetState
from tests.unit.doubles import TICK, Clock, MemorySource, MemoryStateStore, MemoryTarget


@dataclass
class ScriptedPolicy:
    """Answers ``desired`` and records every snapshot it was shown; ``surge_to`` answers the watch."""

    desired: int = 5
    seen: list[Snapshot] = field(default_factory=list)
    fail: bool = False
    surge_to: int | None = None
    surges: list[Snapshot] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "scripted"

    def decide(self, snapshot: Snapshot) -> Decision:
        self.seen.append(snapshot)
        if self.fail:
            raise ZeroDivisionError("bug")
        return Decision(self.desired, "scripted", {"x": 1.0})

    def surge(self, snapshot: Snapshot) -> Decision | None:
        self.surges.append(snapshot)
        return None if self.surge_to is None else Decision(self.surge_to, "surge", {"y": 2.0})


class Gate:
    def __init__(self, leader: bool) -> None:
        self.leader = leader

    def is_leader(self) -> bool:
        return self.leader


@dataclass
class Rig:
    clock: Clock
    source: MemorySource
    target: MemoryTarget
    policy: ScriptedPolicy
    loop: TargetLoop
    gate: Gate

    def tick(self, advance: float = TICK) -> TickReport:
        self.clock.advance(advance)
        return self.loop.tick()


def rig(
    *, shadow: bool = False, leader: bool = True, desired: int = 5, arrivals_total: int | None = 0
) -> Rig:
    clock = Clock()
    source = MemorySource(clock, arrivals_total=arrivals_total)
    target = MemoryTarget(clock)
    policy = ScriptedPolicy(desired)
    gate = Gate(leader)
    settings = LoopSettings(WorkloadSpec(tick_seconds=TICK), shadow=shadow)
    loop = TargetLoop("t", source, target, policy, settings, leader=gate, clock=clock, rng=random.Random(7))
    return Rig(clock, source, target, policy, loop, gate)


# ---- building the snapshot -------------------------------------------------------------------------


def test_arrivals_are_the_counter_delta_and_interval_the_time_between_ticks() -> None:
    r = rig()
    r.source.arrivals_total = 100
    r.tick()
    r.source.arrivals_total = 110
    r.tick()
    r.source.arrivals_total = 130
    r.tick(advance=7.0)
    assert [s.arrivals for s in r.policy.seen] == [0, 10, 20]
    assert [s.interval for s in r.policy.seen] == [0.0, 5.0, 7.0]  # nothing to difference at first


def test_a_slow_target_read_does_not_shrink_the_interval_the_arrivals_were_counted_over() -> None:
    r = rig()
    r.source.arrivals_total = 100
    r.tick()
    r.source.arrivals_total = 160
    r.target.observe_seconds = 7.0  # e.g. a pod list that took seconds to sync
    report = r.tick()
    assert report.snapshot is not None
    assert (report.snapshot.arrivals, report.snapshot.interval) == (60, TICK + 7.0)
    assert report.now == r.clock.now  # the tick's time is after its reads


def test_a_counter_that_goes_down_was_reset_and_counts_from_zero() -> None:
    r = rig()
    r.source.arrivals_total = 500
    r.tick()
    r.source.arrivals_total, r.source.waiting = 4, 4  # Redis flushed and 4 jobs arrived since
    r.tick()
    assert r.policy.seen[-1].arrivals == 4


def test_a_counter_restored_from_an_older_snapshot_does_not_count_its_whole_past_as_arrivals() -> None:
    # A Redis restart from an RDB snapshot (or a failover to a lagging replica) takes the counter
    # back to a value it had long ago. Its value is every job ever counted, not this tick's arrivals:
    # taken as such, 100k jobs in 5 s scale straight to max_replicas.
    r = rig()
    r.source.arrivals_total, r.source.waiting = 100_000, 5
    r.tick()
    r.source.arrivals_total, r.source.waiting = 100_010, 5
    r.tick()
    # restored: 30 increments lost, 3 jobs since; 6 waiting now and 2 completed during the tick
    r.source.arrivals_total, r.source.waiting, r.source.service_times = 99_983, 6, (1.0, 1.0)
    r.tick()
    r.source.arrivals_total = 99_990
    r.tick()
    assert [s.arrivals for s in r.policy.seen] == [0, 10, 3, 7]


def test_no_counter_movement_makes_a_negative_arrivals_count_in_the_snapshot_or_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both ways down: a flush (the counter from 0 again) and a counter other software took below
    # zero (an arrivals_key DECR'd on pop). The policy reads a negative count as "no data"; the
    # decision log and the watch would read it as jobs that un-arrived.
    r = rig()
    readings = [(500, 2), (3, 3), (-4, 3), (-9, 5), (-7, 5), (2, 6)]  # (counter, waiting)
    with caplog.at_level(logging.INFO, logger="autoscaler.decision"):
        for total, waiting in readings:
            r.source.arrivals_total, r.source.waiting = total, waiting
            r.tick()
    logged = [json.loads(JsonFormatter().format(rec))["arrivals"] for rec in caplog.records]
    seen = [s.arrivals for s in r.policy.seen]
    assert seen == logged
    # 3 since the flush; below zero: the queue's growth (0, then 2); a rise is a delta, wherever
    # the counter stands (2, 9)
    assert seen == [0, 3, 0, 2, 2, 9]


def test_without_counter_arrivals_are_queue_growth_plus_completions_clipped_at_zero() -> None:
    r = rig(arrivals_total=None)
    r.source.waiting = 10
    r.tick()
    r.source.waiting = 15
    r.tick()
    r.source.waiting, r.source.service_times = 14, (1.0, 1.0, 1.0)  # 3 done, 2 new
    r.tick()
    r.source.waiting = 3
    r.tick()
    assert [s.arrivals for s in r.policy.seen] == [0, 5, 2, 0]


def test_pods_get_busy_slots_from_worker_heartbeats_and_scale_sees_them() -> None:
    r = rig(desired=1)
    r.target.pods = [
        PodView("a", PodPhase.READY, 0.0, ready_at=30.0),
        PodView("b", PodPhase.READY, 0.0, ready_at=30.0),
    ]
    r.source.busy = {"a": 1, "ghost": 1}
    r.tick()
    snapshot = r.policy.seen[-1]
    assert {p.name: p.busy_slots for p in snapshot.pods} == {"a": 1, "b": 0}
    _, state = r.target.scaled[-1]
    assert {p.name: p.busy for p in state.pods} == {"a": True, "b": False}


def test_startups_and_service_times_reach_the_policy() -> None:
    r = rig()
    r.target.startups = [31.5]
    r.source.service_times = (4.0, 6.0)
    r.tick()
    assert r.policy.seen[-1].startup_times == (31.5,)
    assert r.policy.seen[-1].service_times == (4.0, 6.0)


@pytest.mark.parametrize("held_by", ["policy-error", "stale"])
def test_samples_read_on_a_tick_the_policy_could_not_use_reach_the_next_decision(held_by: str) -> None:
    """The source hands each completion over once; on a tick whose decision failed (or whose
    signals were too old to act on) its service times were dropped, the startups kept."""
    r = rig()
    r.tick()
    r.source.service_times, r.target.startups = (4.0, 6.0), [31.0]
    r.policy.fail = held_by == "policy-error"
    r.source.age = 4 * TICK if held_by == "stale" else 0.0
    report = r.tick()
    held = report.error == "policy-error" or (report.snapshot is not None and report.snapshot.stale)
    assert held and report.error == (held_by if held_by == "policy-error" else None)
    r.policy.fail, r.source.age = False, 0.0
    r.source.service_times = (5.0,)
    r.tick()
    delivered = [(seen.service_times, seen.startup_times) for seen in r.policy.seen[-1:]]
    r.tick()
    delivered += [(seen.service_times, seen.startup_times) for seen in r.policy.seen[-1:]]
    assert delivered == [((4.0, 6.0, 5.0), (31.0,)), ((), ())]  # each once


# ---- failing safe --------------------------------------------------------------------------------


def test_unreadable_signals_hold_and_never_scale_even_if_the_policy_says_otherwise() -> None:
    r = rig(desired=0)
    r.source.down = True
    report = r.tick()
    assert report.snapshot is not None and report.snapshot.stale
    assert r.policy.seen[-1].stale
    assert r.target.scaled == []
    assert not report.acted
    assert report.error == "source-unavailable"


def test_signals_older_than_three_ticks_are_stale() -> None:
    r = rig(desired=9)
    r.source.age = STALE_TICKS * TICK + 0.1
    report = r.tick()
    assert report.snapshot is not None and report.snapshot.stale
    assert r.target.scaled == []
    r.source.age = STALE_TICKS * TICK - 0.1
    fresh = r.tick().snapshot
    assert fresh is not None and not fresh.stale


def test_after_an_outage_arrivals_cover_the_whole_gap() -> None:
    r = rig()
    r.source.arrivals_total = 10
    r.tick()
    r.source.down = True
    r.tick()
    r.tick()
    r.source.down, r.source.arrivals_total = False, 40
    r.tick()
    fresh = r.policy.seen[-1]
    assert (fresh.arrivals, fresh.interval) == (30, 3 * TICK)


def test_startups_seen_during_an_outage_are_delivered_once_signals_return() -> None:
    r = rig()
    r.source.down = True
    r.target.startups = [29.0]
    r.tick()
    r.source.down = False
    r.tick()
    r.tick()
    assert [s.startup_times for s in r.policy.seen] == [(), (29.0,), ()]


def test_the_real_policy_holds_on_a_stale_snapshot() -> None:
    clock = Clock()
    source, target = MemorySource(clock, down=True), MemoryTarget(clock, replicas=7)
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK, min_replicas=0))
    loop = TargetLoop("t", source, target, policy, LoopSettings(policy.workload), clock=clock)
    for _ in range(5):
        clock.advance()
        report = loop.tick()
        assert report.decision is not None and report.decision.desired == 7
    assert target.scaled == []


# ---- gating ---------------------------------------------------------------------------------------------


def test_shadow_mode_decides_and_publishes_but_never_scales() -> None:
    r = rig(shadow=True, desired=9)
    reports = [r.tick() for _ in range(3)]
    assert all(rep.decision is not None and rep.decision.desired == 9 for rep in reports)
    assert all(rep.shadow and not rep.acted for rep in reports)
    assert r.target.scaled == []


def test_a_standby_decides_but_only_the_leader_scales() -> None:
    r = rig(leader=False, desired=9)
    r.tick()
    assert r.target.scaled == [] and len(r.policy.seen) == 1  # estimators stay warm
    r.gate.leader = True
    report = r.tick()
    assert report.acted and report.leader
    assert r.target.scaled[-1][0].desired == 9


class FadingGate:
    """Leader for the first ``answers`` questions, then not: leadership lost in the middle of a tick."""

    def __init__(self, answers: int) -> None:
        self.answers = answers

    def is_leader(self) -> bool:
        self.answers -= 1
        return self.answers >= 0


def test_leadership_lost_between_the_decision_and_the_write_writes_nothing() -> None:
    r = rig(desired=9)
    r.loop.leader = FadingGate(answers=1)  # the tick's own check passes, the target's does not
    report = r.tick()
    assert r.target.scaled == [] and r.target.replicas == 2
    assert report.error == "leadership-lost" and not report.acted and not report.leader
    assert report.next_delay == TICK  # not a fault of the target: no backoff


def test_a_surge_is_not_applied_by_a_replica_that_lost_leadership_meanwhile() -> None:
    r = rig(desired=2)
    r.policy.surge_to = 8
    r.tick()
    r.loop.leader = FadingGate(answers=1)  # the watch's check passes, the target's does not
    r.source.waiting, r.source.arrivals_total = 30, 30
    report = r.loop.watch()
    assert report is not None and report.error == "leadership-lost" and not report.acted
    assert r.target.scaled == []


def test_may_act_is_false_once_a_reload_makes_the_target_shadow() -> None:
    r = rig(desired=9)
    assert r.loop.may_act()
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=TICK), shadow=True))
    assert not r.loop.may_act()


def test_no_scale_call_when_the_count_is_already_right() -> None:
    r = rig(desired=2)
    assert not r.tick().acted
    assert r.target.scaled == []


def test_reconfigure_switches_shadow_off_between_ticks() -> None:
    r = rig(shadow=True, desired=4)
    r.tick()
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=TICK), shadow=False))
    assert r.tick().acted


# ---- errors and backoff -----------------------------------------------------------------------------


def test_target_errors_back_off_exponentially_with_jitter_then_reset() -> None:
    r = rig()
    r.target.fail_observe = True
    reports = [r.tick(advance=0.0) for _ in range(5)]
    assert {rep.error for rep in reports} == {"target-unavailable"}
    delays = [rep.next_delay for rep in reports]
    for n, delay in enumerate(delays):
        nominal = min(60.0, 1.0 * 2**n)
        assert nominal / 2 <= delay <= nominal
    assert delays[-1] > delays[0]
    assert r.policy.seen == []  # nothing decided without the target's state
    r.target.fail_observe = False
    assert r.tick().next_delay == TICK


def test_a_failed_scale_is_retried_after_a_backoff() -> None:
    r = rig(desired=6)
    r.target.fail_scale = True
    report = r.tick()
    assert report.error == "scale-failed" and not report.acted and report.next_delay < TICK
    r.target.fail_scale = False
    report = r.tick(advance=report.next_delay)
    assert report.acted and r.target.replicas == 6


def test_a_policy_bug_holds_instead_of_crashing_the_loop() -> None:
    r = rig()
    r.policy.fail = True
    r.source.latencies = (12.0,)
    report = r.tick()
    assert report.error == "policy-error" and report.decision is None
    assert r.target.scaled == []
    assert report.latencies == (12.0,)  # the read consumed them: they are reported all the same


def test_a_policy_that_keeps_failing_is_replaced_by_a_fresh_one_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = rig(desired=4)
    built: list[ScriptedPolicy] = []

    def fresh() -> ScriptedPolicy:
        built.append(ScriptedPolicy(desired=6))
        return built[-1]

    settings = LoopSettings(WorkloadSpec(tick_seconds=TICK), policy_reset_after_errors=3)
    r.loop.reconfigure(settings, policy_factory=fresh)
    r.policy.fail = True
    r.tick()
    r.policy.fail = False
    r.tick()  # a success in between: the count starts again
    r.policy.fail = True
    with caplog.at_level(logging.WARNING, logger="autoscaler.loop"):
        reports = [r.tick() for _ in range(3)]
    assert [rep.error for rep in reports] == ["policy-error"] * 3
    assert [rep.policy_reset for rep in reports] == [False, False, True]
    assert r.loop.policy is built[0] and r.loop.policy_resets == 1 and r.loop.policy_errors == 0
    resets = [rec for rec in caplog.records if "replaced by a fresh one" in rec.getMessage()]
    assert len(resets) == 1 and resets[0].levelno == logging.ERROR
    fields = json.loads(JsonFormatter().format(resets[0]))
    assert (fields["errors"], fields["policy"], fields["error"]) == (3, "scripted", "ZeroDivisionError: bug")

    after = r.tick()  # the fresh policy decides, and the target is scaled again
    assert after.error is None and after.decision is not None and after.acted
    assert len(built[0].seen) == 1 and r.target.replicas == 6


def test_the_fresh_policy_starts_cold_without_restoring_the_state_it_replaces() -> None:
    clock = Clock()
    store = MemoryStateStore()
    history_reads: list[int] = []

    def history() -> tuple[list[float], list[float]]:
        history_reads.append(1)
        return [clock() - 10.0], []

    workload = WorkloadSpec(tick_seconds=TICK)
    policy = make_policy("startup-aware", workload)
    loop = TargetLoop(
        "t",
        MemorySource(clock),
        MemoryTarget(clock),
        policy,
        LoopSettings(workload, policy_reset_after_errors=2),
        clock=clock,
        history=history,
        state_store=store,
        policy_factory=lambda: make_policy("startup-aware", workload),
    )
    clock.advance()
    assert loop.tick().error is None and history_reads == [1]  # no saved state: warmed from history
    assert store.saves == 1
    assert isinstance(policy, StartupAwarePolicy)
    policy._startup = None  # type: ignore[assignment]  # learned state that breaks every decision
    clock.advance()
    assert loop.tick().error == "policy-error"
    clock.advance()
    assert loop.tick().policy_reset
    fresh = loop.policy
    assert isinstance(fresh, StartupAwarePolicy) and fresh is not policy
    clock.advance(31.0)  # past the save period
    report = loop.tick()
    assert report.error is None and report.decision is not None
    assert history_reads == [1]  # neither replayed the history nor restored the saved state
    assert store.saves == 2 and store.document is not None  # the fresh state replaced the saved one


def test_without_a_factory_or_when_it_fails_the_old_policy_stays() -> None:
    r = rig()
    r.policy.fail = True
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=TICK), policy_reset_after_errors=1))
    assert not r.tick().policy_reset and r.loop.policy is r.policy

    def broken() -> ScriptedPolicy:
        raise RuntimeError("cannot build")

    r.loop.reconfigure(r.loop.settings, policy_factory=broken)
    assert not r.tick().policy_reset and r.loop.policy is r.policy


def test_job_latencies_are_reported_once_with_the_slo_they_are_held_to() -> None:
    r = rig()
    r.source.latencies = (3.0, 11.0)
    first = r.tick()
    assert (first.latencies, first.slo_seconds) == ((3.0, 11.0), WorkloadSpec().slo_seconds)
    assert r.tick().latencies == ()
    r.source.latencies, r.source.down = (4.0,), True
    assert r.tick().latencies == ()  # not read while the source is down: still there for later
    r.source.down = False
    assert r.tick().latencies == (4.0,)


def test_backoff_is_capped() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    assert max(delays) <= 8.0 and min(delays[5:]) >= 4.0


# ---- explanation and warm start ---------------------------------------------------------------------


def test_one_json_log_line_per_decision(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(desired=3)
    with caplog.at_level(logging.INFO, logger="autoscaler.decision"):
        r.tick()
    records = [rec for rec in caplog.records if rec.name == "autoscaler.decision"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["msg"] == "decision"
    assert {k: line[k] for k in ("target", "desired", "current", "reason", "shadow", "leader", "acted")} == {
        "target": "t",
        "desired": 3,
        "current": 2,
        "reason": "scripted",
        "shadow": False,
        "leader": True,
        "acted": True,
    }
    assert line["terms"] == {"x": 1.0}


def test_a_season_found_in_the_arrivals_is_exported_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """30 jobs in the first 5 s of every 2 min: by the fourth cycle the period is the season."""
    clock = Clock(now=0.0)
    source, target = MemorySource(clock), MemoryTarget(clock, replicas=1)
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK))
    loop = TargetLoop("t", source, target, policy, LoopSettings(policy.workload), clock=clock)
    seasons = []
    with caplog.at_level(logging.INFO, logger="autoscaler.loop"):
        for i in range(24 * 6):  # six cycles of 24 ticks
            clock.advance()
            assert source.arrivals_total is not None
            source.arrivals_total += 30 if i % 24 == 0 else 0
            report = loop.tick()
            seasons.append((report.estimates or {})["season_seconds"])
    assert seasons[0] == 0.0 and seasons[-1] == 120.0
    assert seasons.index(120.0) >= 3 * 24  # three cycles first
    changes = [r for r in caplog.records if r.getMessage() == "forecast season changed"]
    assert len(changes) == 1
    assert changes[0].fields == {"target": "t", "season_seconds": 120.0, "previous": 0.0}  # type: ignore[attr-defined]


def test_the_learned_standing_pool_is_exported_with_the_estimates() -> None:
    """60 jobs in the first 5 s of every 3 min: bursts over before a pod ordered for them is ready."""
    clock = Clock(now=0.0)
    source, target = MemorySource(clock), MemoryTarget(clock, replicas=1)
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK))
    loop = TargetLoop("t", source, target, policy, LoopSettings(policy.workload), clock=clock)
    pools = []
    for i in range(36 * 2):  # two cycles of 36 ticks
        clock.advance()
        assert source.arrivals_total is not None
        source.arrivals_total += 60 if i % 36 == 0 else 0
        report = loop.tick()
        assert report.decision is not None
        pools.append((report.estimates or {})["standing_pool"])
        assert pools[-1] == report.decision.terms["standing_pool"]
    assert pools[0] == 0.0 and max(pools) > 0  # learned from the first burst's misses


def test_warm_start_gives_the_forecaster_the_recent_rate() -> None:
    clock = Clock(now=10_000.0)
    workload = WorkloadSpec(tick_seconds=TICK)
    policy = StartupAwarePolicy(workload)
    arrivals = [clock.now - 600 + i * 0.5 for i in range(1200)]  # 2 jobs/s over ten minutes
    history_calls: list[int] = []

    def history() -> tuple[list[float], list[float]]:
        history_calls.append(1)
        return arrivals, [5.0] * 50

    source, target = MemorySource(clock), MemoryTarget(clock)
    loop = TargetLoop("t", source, target, policy, LoopSettings(workload), clock=clock, history=history)
    loop.tick()
    forecast = policy.forecaster.forecast(clock.now, 30.0, 1.6)
    assert forecast.mean == pytest.approx(2.0, rel=0.05)
    assert history_calls == [1]
    loop.tick()
    assert history_calls == [1]  # once per policy, not per tick


def test_run_ticks_until_stopped() -> None:
    r = rig()
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=0.01)))
    stop = threading.Event()
    thread = threading.Thread(target=r.loop.run, args=(stop,))
    thread.start()
    while len(r.policy.seen) < 3:
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


# ---- between ticks: the watch ------------------------------------------------------------------------


def watching_rig(**kwargs: bool) -> Rig:
    """A rig after one tick (desired 5 = the target's count after it), with a surge answer of 9."""
    r = rig(**kwargs)
    r.policy.surge_to = 9
    r.source.arrivals_total, r.target.replicas = 100, 5
    r.source.busy = {"pod-a": 1}
    r.tick()
    return r


def test_a_surge_between_ticks_scales_up_at_once_and_is_reported() -> None:
    r = watching_rig()
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting, r.source.in_flight = 160, 40, 5
    report = r.loop.watch()
    assert report is not None and report.acted and report.decision is not None
    assert report.decision.reason == "surge" and r.target.replicas == 9
    (seen,) = r.policy.surges
    # Counted from the last tick, with the tick's worker states; no samples (the tick's to report).
    assert (seen.arrivals, seen.interval, seen.waiting, seen.in_flight) == (60, 1.0, 40, 5)
    assert seen.service_times == () and seen.startup_times == () and not seen.stale
    assert r.loop.last_report is report


def test_the_watch_reads_only_the_counts_until_jobs_wait_that_arrived_since_the_tick() -> None:
    r = watching_rig()
    observes = r.target.observes
    r.clock.advance(1.0)
    r.source.waiting = 30  # a queue, but nothing new: the tick has seen it
    assert r.loop.watch() is None
    r.source.arrivals_total, r.source.waiting = 120, 0  # new jobs, all taken already
    assert r.loop.watch() is None
    assert r.source.pulses == 2 and r.target.observes == observes and r.policy.surges == []


def test_no_answer_means_no_action() -> None:
    r = watching_rig()
    r.policy.surge_to = None
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting = 160, 40
    assert r.loop.watch() is None
    assert len(r.policy.surges) == 1 and r.target.scaled == []


def test_an_answer_below_the_current_count_is_never_applied() -> None:
    r = watching_rig()
    r.policy.surge_to = 3
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting = 160, 40
    assert r.loop.watch() is None
    assert r.target.replicas == 5


@pytest.mark.parametrize("kwargs", [{"shadow": True}, {"leader": False}])
def test_shadow_targets_and_standbys_do_not_watch(kwargs: dict[str, bool]) -> None:
    r = watching_rig(**kwargs)
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting = 160, 40
    assert r.loop.watch() is None
    assert r.source.pulses == 0 and r.policy.surges == []


def test_no_watch_before_a_tick_read_fresh_signals_or_when_switched_off() -> None:
    r = rig()
    r.policy.surge_to = 9
    r.source.arrivals_total, r.source.waiting = 50, 40
    assert r.loop.watch() is None  # nothing to count arrivals from yet
    r.tick()
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=TICK, watch_seconds=0.0)))
    r.source.arrivals_total = 90
    assert r.loop.watch() is None
    assert r.source.pulses == 0


def test_failures_in_the_watch_are_left_to_the_next_tick() -> None:
    r = watching_rig()
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting = 160, 40
    r.source.down = True
    assert r.loop.watch() is None
    r.source.down, r.target.fail_observe = False, True
    assert r.loop.watch() is None
    r.target.fail_observe, r.target.fail_scale = False, True
    report = r.loop.watch()
    assert report is not None and not report.acted and report.error == "scale-failed"


def test_samples_met_by_the_watch_reach_the_next_tick() -> None:
    r = watching_rig()
    r.clock.advance(1.0)
    r.source.arrivals_total, r.source.waiting = 160, 40
    r.source.service_times, r.target.startups = (4.0, 6.0), [31.0]
    assert r.loop.watch() is not None
    r.tick(advance=4.0)
    tick = r.policy.seen[-1]
    assert tick.service_times == (4.0, 6.0) and tick.startup_times == (31.0,)
    assert (tick.arrivals, tick.interval) == (60, 5.0)  # the tick still counts its whole interval


def test_the_real_policy_answers_a_burst_between_ticks_and_not_steady_traffic() -> None:
    clock = Clock()
    source, target = MemorySource(clock), MemoryTarget(clock, replicas=2)
    target.pods = [PodView(f"p{i}", PodPhase.READY, 0.0, ready_at=30.0) for i in range(2)]
    policy = StartupAwarePolicy(WorkloadSpec(tick_seconds=TICK))
    loop = TargetLoop("t", source, target, policy, LoopSettings(policy.workload), clock=clock)
    loop.tick()
    for _ in range(24):  # two minutes at 0.2 job/s: two pods are plenty
        clock.advance(1.0)
        source.arrivals_total = (source.arrivals_total or 0) + 1
        source.waiting = 1
        assert loop.watch() is None  # a job waiting a moment is no surge
        clock.advance(TICK - 1.0)
        source.waiting = 0
        loop.tick()
    clock.advance(1.0)
    source.arrivals_total, source.waiting = (source.arrivals_total or 0) + 120, 118
    report = loop.watch()
    assert report is not None and report.decision is not None and report.decision.reason == "surge"
    assert target.replicas == report.decision.desired > 20


@dataclass
class CountingTarget(MemoryTarget):
    """A target that counts its Ready pods from memory (``ReadyCount``), or cannot (``blind``)."""

    blind: bool = False
    counts: int = 0

    def ready_pods(self) -> int | None:
        self.counts += 1
        return None if self.blind else sum(p.phase is PodPhase.READY for p in self.pods)


def gated_loop(target: CountingTarget, slots: int = 1) -> tuple[TargetLoop, MemorySource]:
    """A loop around the real policy and ``target`` (8 Ready pods), after one tick at 0.2 job/s."""
    clock = target.clock
    target.replicas = 8
    target.pods = [PodView(f"p{i}", PodPhase.READY, 0.0, ready_at=30.0) for i in range(8)]
    source = MemorySource(clock)
    workload = WorkloadSpec(tick_seconds=TICK, slots_per_pod=slots)
    loop = TargetLoop("t", source, target, StartupAwarePolicy(workload), LoopSettings(workload), clock=clock)
    source.arrivals_total = 1
    loop.tick()
    clock.advance(1.0)
    return loop, source


def test_a_queue_the_ready_pods_start_in_time_is_no_surge_and_the_target_is_not_read() -> None:
    # 8 pods start 8 jobs per 5 s service: 8 waiting start within the 5 s wait budget of the SLO.
    target = CountingTarget(Clock())
    loop, source = gated_loop(target)
    observes = target.observes
    source.arrivals_total, source.waiting = 9, 8
    assert loop.watch() is None
    assert (target.counts, target.observes) == (1, observes)
    # A queue beyond them, after a burst: the target is read and the surge answered as before.
    source.arrivals_total, source.waiting = 40, 39
    report = loop.watch()
    assert report is not None and report.decision is not None and report.decision.reason == "surge"
    assert target.observes == observes + 1 and target.replicas == report.decision.desired > 8


def test_ready_slots_are_pods_times_slots_per_pod() -> None:
    target = CountingTarget(Clock())
    loop, source = gated_loop(target, slots=4)
    observes = target.observes
    source.arrivals_total, source.waiting = 33, 32  # 8 pods x 4 slots start 32 within the budget
    assert loop.watch() is None and target.observes == observes
    source.arrivals_total, source.waiting = 34, 33
    loop.watch()
    assert target.observes == observes + 1


def test_a_target_that_cannot_count_from_memory_is_read_as_before() -> None:
    target = CountingTarget(Clock(), blind=True)
    loop, source = gated_loop(target)
    observes = target.observes
    source.arrivals_total, source.waiting = 9, 8
    assert loop.watch() is None  # no surge for the policy either, but it had to read the target
    assert (target.counts, target.observes) == (1, observes + 1)


def test_run_watches_between_ticks() -> None:
    r = watching_rig()
    r.loop.reconfigure(LoopSettings(WorkloadSpec(tick_seconds=0.2, watch_seconds=0.02)))
    stop = threading.Event()
    thread = threading.Thread(target=r.loop.run, args=(stop,))
    thread.start()
    while r.source.pulses < 10:
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert r.source.pulses >= 10


# ---- learned state across processes and reloads -------------------------------------------------


@dataclass
class StatefulRig:
    loop: TargetLoop
    source: MemorySource
    policy: StartupAwarePolicy
    gate: Gate
    history_calls: list[int]


def stateful_rig(
    store: MemoryStateStore, clock: Clock, *, leader: bool = True, shadow: bool = False
) -> StatefulRig:
    """A loop around a real startup-aware policy, with a history reader that counts its calls."""
    workload = WorkloadSpec(tick_seconds=TICK)
    calls: list[int] = []

    def read_history() -> tuple[list[float], list[float]]:
        calls.append(1)
        return [clock.now - 60.0 + i for i in range(60)], []

    source, policy, gate = MemorySource(clock), StartupAwarePolicy(workload), Gate(leader)
    settings = LoopSettings(workload, shadow=shadow, state_save_seconds=30.0)
    loop = TargetLoop(
        "t",
        source,
        MemoryTarget(clock),
        policy,
        settings,
        leader=gate,
        clock=clock,
        history=read_history,
        state_store=store,
    )
    return StatefulRig(loop, source, policy, gate, calls)


BURSTY = [0] * 10 + [80, 80]
"""Arrivals per tick: idle, then a burst, which is what the standing pool learns from."""


def drive(r: StatefulRig, clock: Clock, ticks: int) -> None:
    for i in range(ticks):
        clock.advance()
        assert r.source.arrivals_total is not None
        r.source.arrivals_total += BURSTY[i % len(BURSTY)]
        r.loop.tick()


def test_a_new_process_continues_from_the_saved_state_instead_of_warming_up() -> None:
    clock, store = Clock(), MemoryStateStore()
    first = stateful_rig(store, clock)
    drive(first, clock, 60)
    assert first.loop.save_state(force=True)
    saved = first.policy.export_state()["state"]
    assert saved["_pool"]["object"]["pods"] > 0

    second = stateful_rig(store, clock)
    second.source.arrivals_total = first.source.arrivals_total
    clock.advance()
    second.loop.tick()
    assert second.history_calls == []  # the saved state made the history warm start unnecessary
    restored = second.policy.export_state()["state"]
    # The new process's first tick has nothing to difference yet, so it adds no data to these.
    assert restored["forecaster"] == saved["forecaster"]
    assert restored["_service"] == saved["_service"]
    assert restored["_pool"]["object"]["pods"] == saved["_pool"]["object"]["pods"]
    assert restored["_pool"]["object"]["_ticks"]["deque"][:-1] == saved["_pool"]["object"]["_ticks"]["deque"]


def test_without_saved_state_the_forecaster_is_warmed_from_history() -> None:
    clock = Clock()
    r = stateful_rig(MemoryStateStore(), clock)
    drive(r, clock, 1)
    assert r.history_calls == [1]


def test_only_the_acting_leader_saves_every_save_period_and_on_stop() -> None:
    clock = Clock()
    for leader, shadow in ((False, False), (True, True)):
        store = MemoryStateStore()
        drive(stateful_rig(store, clock, leader=leader, shadow=shadow), clock, 20)
        assert store.saves == 0 and store.document is None

    store = MemoryStateStore()
    r = stateful_rig(store, clock)
    drive(r, clock, 1)
    assert store.saves == 1  # the first fresh tick, right after reading the store
    drive(r, clock, 13)  # 65 s more: every 30 s
    assert store.saves == 3
    assert r.loop.last_report is not None and r.loop.last_report.state_saved_at == clock.now - 5.0
    assert store.document is not None and store.document["target"] == "t"
    assert store.document["saved_at"] == clock.now - 5.0
    stop = threading.Event()
    stop.set()
    r.loop.run(stop)
    assert store.saves == 4 and store.document["saved_at"] == clock.now


def test_nothing_is_saved_before_the_store_could_be_read() -> None:
    clock, store = Clock(), MemoryStateStore()
    first = stateful_rig(store, clock)
    drive(first, clock, 30)
    first.loop.save_state(force=True)
    saved, saves = store.document, store.saves
    assert saved is not None

    store.down = True
    second = stateful_rig(store, clock)
    drive(second, clock, 10)  # decides meanwhile (warmed from history), but saves nothing
    assert store.document == saved and store.saves == saves
    store.down = False
    drive(second, clock, 1)
    assert store.saves == saves + 1 and store.document is not None and store.document["saved_at"] == clock.now
    assert (
        second.policy.export_state()["state"]["_pool"]["object"]["pods"]
        == saved["state"]["_pool"]["object"]["pods"]
    )


def test_an_unusable_saved_state_starts_cold_and_is_replaced() -> None:
    clock = Clock()
    for store in (MemoryStateStore(corrupt=True), MemoryStateStore(document={"format": 1, "policy": "keda"})):
        r = stateful_rig(store, clock)
        drive(r, clock, 3)
        assert r.history_calls == [1]  # cold: warmed from history instead
        assert store.document is not None and store.document["policy"] == "startup-aware"


def test_a_reload_hands_the_learned_state_to_a_policy_of_the_same_kind_only() -> None:
    clock = Clock()
    r = stateful_rig(MemoryStateStore(), clock)
    drive(r, clock, 60)
    workload = WorkloadSpec(tick_seconds=TICK)
    retuned = StartupAwarePolicy(workload, StartupAwareConfig(confidence=0.9))
    r.loop.reconfigure(LoopSettings(workload), retuned)
    assert retuned.export_state() == r.policy.export_state()
    drive(r, clock, 1)
    assert r.history_calls == [1]  # once, for the very first policy; the retuned one inherited

    other = ScriptedPolicy()
    r.loop.reconfigure(LoopSettings(workload), other)
    fresh = StartupAwarePolicy(workload)
    r.loop.reconfigure(LoopSettings(workload), fresh)
    assert fresh.export_state() == StartupAwarePolicy(workload).export_state()


def test_the_observer_has_counted_a_report_before_it_becomes_last_report() -> None:
    """Whoever waits for ``last_report`` and then scrapes /metrics (the demo) sees that tick counted."""
    seen_before: list[TickReport | None] = []

    class Observer:
        def __init__(self) -> None:
            self.loop: TargetLoop | None = None

        def observe_tick(self, report: TickReport) -> None:
            assert self.loop is not None
            seen_before.append(self.loop.last_report)

    observer = Observer()
    clock = Clock()
    settings = LoopSettings(WorkloadSpec(tick_seconds=TICK))
    loop = TargetLoop(
        "t", MemorySource(clock), MemoryTarget(clock), ScriptedPolicy(3), settings, clock=clock,
        observer=observer,
    )  # fmt: skip
    observer.loop = loop
    clock.advance(TICK)
    first = loop.tick()
    clock.advance(TICK)
    second = loop.tick()
    assert seen_before == [None, first] and loop.last_report is second


def test_min_and_max_replicas_bound_every_policy_not_only_the_startup_aware_one() -> None:
    # keda keeps its own HPA minReplicas (1) and static:N its N; the target's bounds must still win.
    clock = Clock()
    workload = WorkloadSpec(tick_seconds=TICK, min_replicas=3, max_replicas=30)
    for spec, start, expected, reason in (
        ("keda", 3, 3, "min-replicas"),
        ("static:50", 3, 30, "max-replicas"),
    ):
        target = MemoryTarget(clock)
        target.replicas = start
        policy = make_policy(spec, workload)
        loop = TargetLoop("t", MemorySource(clock), target, policy, LoopSettings(workload), clock=clock)
        reports = []
        for _ in range(80):  # past KEDA's 300 s scale-down stabilization on an empty queue
            clock.advance()
            reports.append(loop.tick())
        assert target.replicas == expected, spec
        assert {r.decision.desired for r in reports if r.decision} == {expected}, spec
        last = reports[-1].decision
        assert last is not None and last.reason == reason


def test_a_target_that_writes_between_scales_is_given_the_loops_leader_gate() -> None:
    # The Kubernetes target clears a predecessor's stale deletion marks at observe(); it must ask
    # the same gate as scale() does (leader, not shadow), which the loop binds at construction.
    class GatedTarget(MemoryTarget):
        gate: object = None

        def bind_gate(self, may_act: object) -> None:
            self.gate = may_act

    clock = Clock()
    target = GatedTarget(clock)
    gate = Gate(True)
    loop = TargetLoop(
        "t",
        MemorySource(clock),
        target,
        ScriptedPolicy(5),
        LoopSettings(WorkloadSpec()),
        leader=gate,
        clock=clock,
    )
    assert callable(target.gate)
    assert target.gate() is True
    gate.leader = False
    assert target.gate() is False
    assert loop.may_act() is False


def report_startups(r: StatefulRig, samples: dict[str, float], present: set[str]) -> None:
    target = r.loop.target
    assert isinstance(target, MemoryTarget)
    target.startups, target.startup_pods, target.pod_ids = list(samples.values()), list(samples), present


def test_a_new_process_counts_only_the_startups_its_predecessor_had_not() -> None:
    """A target reports each pod once per process; the next process reports the pods Ready already
    once more. Only those whose samples the saved state does not hold may count."""
    clock, store = Clock(), MemoryStateStore()
    first = stateful_rig(store, clock)
    report_startups(first, {"u1": 30.0, "u2": 31.0}, {"u1", "u2"})
    drive(first, clock, 1)
    first.source.down = True  # u3 became Ready on a tick that could not decide: not counted yet
    report_startups(first, {"u3": 32.0}, {"u1", "u2", "u3"})
    drive(first, clock, 1)
    assert first.loop.save_state(force=True)
    assert store.document is not None and store.document["startup_pods"] == ["u1", "u2"]

    second = stateful_rig(store, clock)
    report_startups(second, {"u1": 30.0, "u2": 31.0, "u3": 32.0}, {"u1", "u2", "u3"})
    drive(second, clock, 1)
    assert list(second.policy._startup._samples) == [30.0, 31.0, 32.0]


def test_the_counted_pods_are_those_that_still_exist_and_start_over_with_a_cold_policy() -> None:
    clock, store = Clock(), MemoryStateStore()
    r = stateful_rig(store, clock)
    report_startups(r, {"u1": 30.0, "u2": 31.0}, {"u1", "u2"})
    drive(r, clock, 1)
    report_startups(r, {}, {"u2", "u4"})  # u1 is gone: its id never comes back, no need to keep it
    drive(r, clock, 1)
    assert r.loop.save_state(force=True)
    assert store.document is not None and store.document["startup_pods"] == ["u2"]

    workload = WorkloadSpec(tick_seconds=TICK)
    r.loop.reconfigure(LoopSettings(workload), ScriptedPolicy())  # holds none of those samples
    r.loop.reconfigure(LoopSettings(workload), StartupAwarePolicy(workload))
    report_startups(r, {"u2": 31.0}, {"u2"})  # were it reported again, the fresh policy may count it
    drive(r, clock, 1)
    assert list(r.loop.policy._startup._samples) == [31.0]  # type: ignore[attr-defined]


@dataclass
class GatelessTarget(MemoryTarget):
    """A target that writes without asking the loop's gate: the loop's own check must stop it."""

    def scale(self, decision: Decision, state: TargetState, may_act: object = None) -> int | None:
        return super().scale(decision, state, None)


def test_a_retired_loop_decides_but_calls_no_scale_even_on_a_target_that_never_asks() -> None:
    """Two guards stop a retired loop's writes (its tick, and the gate the target asks); with the
    tick's removed, the tests through the gate still passed."""
    r = rig(desired=5)
    target = GatelessTarget(r.clock)
    loop = TargetLoop(
        "t", r.source, target, r.policy, LoopSettings(WorkloadSpec(tick_seconds=TICK)), leader=r.gate,
        clock=r.clock, rng=random.Random(7),
    )  # fmt: skip
    r.clock.advance(TICK)
    assert loop.tick().acted and len(target.scaled) == 1
    r.policy.desired = 8
    loop.retire()
    r.clock.advance(TICK)
    report = loop.tick()
    assert report.decision is not None and report.decision.desired == 8
    assert not report.acted and len(target.scaled) == 1 and target.replicas == 5
