"""One control loop per scaled target: observe, decide, act, explain.

Each tick reads the queue (a :class:`SignalSource`) and the target (a :class:`ScaleTarget`), builds
the :class:`Snapshot` the policy sees, asks the policy, and applies the decision unless the target
is in shadow mode or this replica is not the leader. The policy runs in every replica and in shadow
mode too, so a standby that takes over, or a shadow target switched to live, acts with warm
estimators instead of a cold start.

Failure behaviour, the part an operator cares about most:

* Signals that cannot be read, or are older than ``STALE_TICKS`` ticks, give a ``stale`` snapshot:
  the policy holds and the loop never acts on it. Missing data never means "no load".
* Target errors (API down, conflicts) skip the tick and retry after an exponential backoff with
  jitter, so a fleet of daemons does not hammer a recovering API server in lockstep.
* A bug in a policy is logged with its traceback and treated like a target error: hold and retry.
  After ``policy_reset_after_errors`` consecutive ticks on which the policy raised, its learned
  state is presumed to be the cause (a decision is a pure function of state and snapshot, and the
  snapshots keep changing): the policy is replaced by a fresh one built from the same config, cold
  (see :meth:`TargetLoop._reset_policy`), and ``autoscaler_policy_resets_total`` counts it.

Learned state (the standing pool above all) survives restarts and hot reloads through
:mod:`autoscaler.learned_state`.

Arrivals between two reads are counted by :mod:`autoscaler.arrivals`, never negative.

Time: the snapshot's ``now`` is on a :class:`~autoscaler.timeline.Timeline` (the wall clock at
start plus monotonic time since), never the wall clock itself, because the policy's windows assume
``now`` never goes backwards and an NTP step would freeze them. Every wall-clock timestamp read
from outside (pod creation and Ready times, the source's read times, history's arrivals) is moved
onto the timeline as it is read; the reports' times go back to the wall clock for the metrics and
the probes, which compare them with ``time()``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from autoscaler.arrivals import arrivals_between
from autoscaler.engine.forecast import RateForecaster
from autoscaler.engine.snapshot import Decision, PodPhase, Policy, Snapshot, SurgeGate, SurgeResponder
from autoscaler.engine.target import WorkloadSpec, within_bounds
from autoscaler.learned_state import LearnedState, hand_over
from autoscaler.sources.base import QueueSignals, SignalSource, SourceUnavailableError
from autoscaler.targets.base import (
    LeadershipLostError,
    ReadyCount,
    ScaleTarget,
    TargetState,
    TargetUnavailableError,
)
from autoscaler.timeline import Timeline
from jobqueue.backoff import backoff_delay

if TYPE_CHECKING:
    from autoscaler.state_store import StateStore

log = logging.getLogger("autoscaler.loop")
decision_log = logging.getLogger("autoscaler.decision")

STALE_TICKS = 3
"""Signals older than this many ticks are stale: hold, do not act."""

PENDING_SERVICE_SAMPLES = 10_000
"""Service-time samples kept for the next decision the policy makes (the newest, if more came)."""

Clock = Callable[[], float]
PolicyFactory = Callable[[], Policy]
"""Builds a fresh policy for the target, as the daemon does at start (``daemon.build_policy``)."""
HistoryReader = Callable[[], tuple[Sequence[float], Sequence[float]]]
"""Past (arrival times, service times) for warming a fresh policy; see ``StreamSource.history``."""


class LeaderGate(Protocol):
    """Whether this replica may act (``autoscaler.leader`` implements it with a Lease)."""

    def is_leader(self) -> bool: ...


class AlwaysLeader:
    """The gate when leader election is disabled: a single replica always acts."""

    def is_leader(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick saw and did; the metrics and the tests read this, not the logs.

    ``now`` and ``state_saved_at`` are wall-clock epoch seconds (the metrics export them and the
    probes compare them with ``time()``); the snapshot's times are on the loop's timeline.
    """

    target: str
    now: float
    snapshot: Snapshot | None
    decision: Decision | None
    acted: bool  # the target was asked to apply the decision and did not fail
    leader: bool
    shadow: bool
    signal_age: float | None
    next_delay: float
    error: str | None = None  # kind: source-unavailable, source-error, target-unavailable, ...
    detail: str | None = None
    estimates: Mapping[str, float] | None = None
    state_saved_at: float | None = None  # last successful save of the learned state by this process
    latencies: tuple[float, ...] = ()  # of jobs that got their final answer since the last read
    slo_seconds: float | None = None  # the latency bound those are held to
    # The replica count the target set when it acted; None when it left the count as it was (held
    # to spare busy pods, changed by someone else since observed, refused): the target has the last
    # word, so ``decision.desired`` alone does not say what changed.
    scaled_to: int | None = None
    # The policy kept failing and was replaced by a fresh one after this tick (see TargetLoop).
    policy_reset: bool = False


class TickObserver(Protocol):
    def observe_tick(self, report: TickReport) -> None: ...


class Backoff:
    """Failures in a row, and the pause after the latest: equal jitter (:mod:`jobqueue.backoff`).

    The count grows for as long as an outage lasts (hours, at one try a minute), so the pause is
    computed without ``2**failures`` ever reaching a float: at 1,024 failures it overflowed, and
    the loop's thread died of the error raised while backing off.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures - 1, self.base, self.cap, self._rng)

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """The per-target knobs a hot reload may change without rebuilding source or target."""

    workload: WorkloadSpec
    shadow: bool = False
    state_save_seconds: float = 30.0
    policy_reset_after_errors: int = 3
    """Consecutive ticks on which the policy raised before it is replaced by a fresh one."""


def policy_estimates(policy: Policy, decision: Decision | None) -> dict[str, float]:
    """The estimator values worth exporting, from the policy if it has them, else its terms."""
    terms = dict(decision.terms) if decision else {}
    out: dict[str, float] = {}
    for name, attribute, term in (
        ("startup_seconds", "startup_estimate", "startup_time"),
        ("service_seconds", "service_estimate", "service_time"),
        ("season_seconds", "season_seconds", "season_seconds"),
    ):
        value = getattr(policy, attribute, None)
        if isinstance(value, int | float):
            out[name] = float(value)
        elif term in terms:
            out[name] = terms[term]
    for name in ("rate_now", "forecast_mean", "forecast_upper", "standing_pool"):
        if name in terms:
            out[name] = terms[name]
    return out


class TargetLoop:
    """The control loop of one target. ``tick()`` is one synchronous step; ``run()`` repeats it."""

    def __init__(
        self,
        name: str,
        source: SignalSource,
        target: ScaleTarget,
        policy: Policy,
        settings: LoopSettings,
        *,
        leader: LeaderGate | None = None,
        observer: TickObserver | None = None,
        clock: Clock = time.time,
        monotonic: Clock | None = None,
        rng: random.Random | None = None,
        history: HistoryReader | None = None,
        state_store: StateStore | None = None,
        policy_factory: PolicyFactory | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.target = target
        self._policy = policy
        self._settings = settings
        self.leader: LeaderGate = leader or AlwaysLeader()
        self._observer = observer
        # ``clock`` is the wall clock and ``monotonic`` the one the timeline counts real seconds by:
        # time.monotonic with the real wall clock; an injected wall clock without a monotonic one
        # (a test's, which moves only when told to) is its own.
        if monotonic is None:
            monotonic = time.monotonic if clock is time.time else clock
        self._timeline = Timeline(clock, monotonic)
        # A target that writes between scale() calls (the Kubernetes target's stale deletion marks,
        # cleared at observe()) asks this gate too: a new leader whose count is already right never
        # calls scale(), and its predecessor's marks would stay.
        bind_gate = getattr(target, "bind_gate", None)
        if callable(bind_gate):
            bind_gate(self.may_act)
        tick = settings.workload.tick_seconds
        self._backoff = Backoff(base=min(1.0, tick), cap=max(60.0, tick), rng=rng)
        self._lock = threading.Lock()
        self._previous: QueueSignals | None = None  # last fresh signals
        # Samples that arrived on a tick the policy could not use (stale, error): delivered later,
        # because targets report each startup once and losing one would bias the warm-up estimate.
        # Each with the id of its pod (None: unknown), which joins the learned state's counted pods
        # once the policy has the sample (see _take_startups).
        self._pending_startups: list[tuple[str | None, float]] = []
        # The source hands each completion over once too. Bounded: the estimator keeps far fewer,
        # and a policy failing (or signals stale) for hours must not grow the process.
        self._pending_services: deque[float] = deque(maxlen=PENDING_SERVICE_SAMPLES)
        self.last_report: TickReport | None = None
        # When the last report was published, on time.monotonic: the liveness probe's "seconds
        # since the last tick" must not jump with an NTP step of the wall clock (see Daemon.health).
        self.reported_monotonic: float | None = None
        self._history = history
        self._needs_warm_start = history is not None
        self._learned = LearnedState(name, state_store, self._timeline)
        self._season = 0.0  # the season the policy's forecast last used (0: none), to log changes
        self._policy_factory = policy_factory
        self.policy_errors = 0  # consecutive ticks on which the policy raised
        self.policy_resets = 0  # times it was replaced by a fresh one for that
        # Set by the daemon when this loop is replaced (a reload) or stopped: see retire().
        self._retired = threading.Event()
        self._abandoned = threading.Event()

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def settings(self) -> LoopSettings:
        return self._settings

    @property
    def state_store(self) -> StateStore | None:
        return self._learned.store

    @property
    def retired(self) -> bool:
        return self._retired.is_set()

    def retire(self) -> None:
        """Never write to the target again: this loop is being replaced by a reload, or stopped.

        Called before the daemon waits for the loop's thread to end, which takes as long as a tick
        in progress (reads of an API server that answers slowly, retries): that tick still decides
        but acts on nothing, so that once the reload has begun only the new loop acts. Its target
        asks :meth:`may_act` before each write, so a decision half applied stops at the next one.
        The learned state is still saved when the thread ends, for the new loop to restore.
        """
        self._retired.set()

    def abandon(self) -> None:
        """Save nothing either: the daemon stopped waiting for this loop's thread and started its
        successor, which has restored (or will) the state saved so far and saves its own; a late
        save of this loop's would replace the newer one."""
        self._retired.set()
        self._abandoned.set()

    @property
    def abandoned(self) -> bool:
        """The daemon stopped waiting for this loop's thread (see :meth:`abandon`)."""
        return self._abandoned.is_set()

    def inherit(self, old: TargetLoop) -> bool:
        """Continue from what ``old``, the retired loop this one replaces, learned in memory.

        For a rebuild that keeps the queue and the workload (the shadow switch of a Kubernetes
        target rebuilds its target): a shadow loop saves nothing, so its successor restoring from
        the store started cold, and the migration from KEDA (shadow beside it, then live) threw
        away what the shadow run had learned just as it began to act. Call before this loop's
        first tick, once ``old``'s thread has ended. Returns whether the state was taken over;
        if not, this loop restores from the store as usual.
        """
        if old.abandoned:  # its tick may still be changing the policy: the store is the safe source
            return False
        with self._lock, old._lock:
            if not hand_over(old._policy, self._policy, self.name):
                return False
            self._learned.skip_restore()
            self._learned.counted = set(old._learned.counted)
            self._needs_warm_start = False
            # Samples old held for a tick it never had, and its clock if ahead (the policy's times
            # are on old's timeline: this one must not run behind them).
            self._pending_startups = [*old._pending_startups, *self._pending_startups]
            self._pending_services.extendleft(reversed(old._pending_services))
            self._timeline.not_before(old._timeline.now())
            return True

    def reconfigure(
        self,
        settings: LoopSettings,
        policy: Policy | None = None,
        *,
        policy_factory: PolicyFactory | None = None,
    ) -> None:
        """Apply a hot-reloaded config between two ticks; a new policy inherits what the old one learned.

        ``policy_factory`` builds the policy of the new config, for a reset after repeated errors.
        """
        with self._lock:
            self._settings = settings
            if policy_factory is not None:
                self._policy_factory = policy_factory
            if policy is not None:
                inherited = hand_over(self._policy, policy, self.name)
                self._policy = policy
                self._needs_warm_start = self._history is not None and not inherited
                if not inherited:
                    self._learned.counted.clear()  # its samples went with the old policy
                self.policy_errors = 0

    def warm_start(self, arrival_times: Sequence[float], service_times: Sequence[float] = ()) -> int:
        """Feed past arrivals (wall-clock epoch seconds) to the policy's forecaster, tick by tick, up to now.

        Only policies with a ``forecaster`` (the startup-aware one) keep arrival history; for the
        others this is a no-op. Service samples are held for the first snapshot. Returns the number of
        ticks replayed.
        """
        forecaster = getattr(self._policy, "forecaster", None)
        self._pending_services.extend(service_times)
        if not isinstance(forecaster, RateForecaster):
            return 0
        offset = self._timeline.offset()
        return forecaster.warm_start([t + offset for t in arrival_times], self._timeline.now())

    # ---- one tick ---------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Observe, decide, maybe act. Never raises: every failure becomes a hold and a report."""
        with self._lock:
            return self._tick()

    def _warm_start_from_history(self) -> None:
        """Once per fresh policy, before its first decision: history is best effort, never fatal."""
        self._needs_warm_start = False
        if self._history is None:
            return
        try:
            arrivals, services = self._history()
        except Exception as exc:
            log.warning(
                "no warm start: history unreadable",
                extra={"fields": {"target": self.name, "error": str(exc)}},
            )
            return
        ticks = self.warm_start(arrivals, services)
        fields = {"target": self.name, "arrivals": len(arrivals), "ticks": ticks}
        log.info("forecaster warmed from history", extra={"fields": fields})

    def _restore_saved_state(self) -> None:
        """Once per process, before the first decision: continue from the saved state, if any."""
        if self._learned.restore(self._policy):
            self._needs_warm_start = False
            counted = self._learned.counted  # the restored policy holds these pods' samples already
            self._pending_startups = [
                (p, s) for p, s in self._pending_startups if p is None or p not in counted
            ]

    def save_state(self, now: float | None = None, *, force: bool = False) -> bool:
        """Save the policy's state if this replica is the acting leader and a save is due.

        ``now`` and the document's ``saved_at`` are on the loop's timeline, like the policy's own
        times in the document. Never raises: a failed save is logged and tried again at the next tick.
        """
        now = self._timeline.now() if now is None else now
        every = self._settings.state_save_seconds
        return self._learned.save(self._policy, now, every, allowed=self._may_save, force=force)

    def _tick(self) -> TickReport:
        if self._learned.pending:
            self._restore_saved_state()
        if self._needs_warm_start:
            self._warm_start_from_history()
        settings = self._settings
        try:
            state = self._on_timeline(self.target.observe())
        except Exception as exc:
            return self._failed(self._timeline.now(), "target-unavailable", exc)
        self._take_startups(state)
        self._learned.forget_pods_except(state.pod_ids)

        signals, error = self._read_source()
        if signals is not None:  # kept until a decision uses them, like the startups
            self._pending_services.extend(signals.service_times)
        # The tick's time is taken after both reads: observing the target can take seconds (a pod
        # list not synced yet), and signals must never look as if read after "now".
        now = self._timeline.now()
        snapshot = self._snapshot(now, state, signals, settings.workload)
        latencies = signals.latencies if signals else ()
        try:
            decision = self._policy.decide(snapshot)
        except Exception as exc:
            self.policy_errors += 1
            reset = self.policy_errors >= settings.policy_reset_after_errors and self._reset_policy(exc)
            return self._failed(now, "policy-error", exc, latencies, policy_reset=reset)
        self.policy_errors = 0
        if not snapshot.stale:  # a hold is never acted on, and its reason says why it held
            decision = within_bounds(decision, settings.workload)
            self._learned.counted.update(p for p, _ in self._pending_startups if p is not None)
            self._pending_startups.clear()
            self._pending_services.clear()
            self._previous = signals
            self.save_state(now)

        acted, detail, delay, scaled_to = False, None, settings.workload.tick_seconds, None
        leader = self.leader.is_leader()  # asked as late as possible: leadership can move mid-tick
        if not self.retired and self._should_act(snapshot, decision, leader, settings.shadow):
            scaled_to, failure = self._scale(decision, state, snapshot)
            if failure is None:
                acted = True
            elif isinstance(failure, LeadershipLostError):  # not a fault: the new leader acts now
                error, detail, leader = "leadership-lost", str(failure), False
                log.info("leadership lost while scaling", extra={"fields": {"target": self.name}})
            else:
                error, detail, delay = "scale-failed", str(failure), self._backoff.next_delay()
                self._log_failure(error, failure, delay)
        if error != "scale-failed":
            self._backoff.reset()
        return self._decided(
            now,
            snapshot,
            decision,
            acted=acted,
            leader=leader,
            delay=delay,
            error=error,
            detail=detail,
            latencies=latencies,
            scaled_to=scaled_to,
        )

    def _scale(
        self, decision: Decision, state: TargetState, snapshot: Snapshot
    ) -> tuple[int | None, Exception | None]:
        """Apply ``decision``; returns the count the target set (None: unchanged) and what went wrong.

        The target asks :meth:`may_act` before each of its writes, not only this tick before the
        first: applying a decision can take several calls and retries, and leadership (or the
        shadow switch of a hot reload) can change meanwhile.
        """
        try:
            return self.target.scale(decision, replace(state, pods=snapshot.pods), self.may_act), None
        except Exception as exc:
            return None, exc

    def may_act(self) -> bool:
        """Whether this loop may write to the target right now: a live target, the leader, and not
        retired (see :meth:`retire`)."""
        return not self._retired.is_set() and self._live_leader()

    def _may_save(self) -> bool:
        """Whether this loop may save the learned state: as :meth:`may_act`, except that a retired
        loop still saves on its way out, unless it was abandoned (see :meth:`abandon`)."""
        return not self._abandoned.is_set() and self._live_leader()

    def _live_leader(self) -> bool:
        """A live target (not shadow) and this replica the leader: what acting and saving both need."""
        return not self._settings.shadow and self.leader.is_leader()

    def _decided(
        self,
        now: float,
        snapshot: Snapshot,
        decision: Decision,
        *,
        acted: bool,
        leader: bool,
        delay: float,
        error: str | None = None,
        detail: str | None = None,
        latencies: tuple[float, ...] = (),
        scaled_to: int | None = None,
    ) -> TickReport:
        """Report a decision (of a tick or of the watch): log it, hand it to the observer, return it."""
        saved = self._learned.last_saved
        report = TickReport(
            target=self.name,
            now=self._timeline.to_wall(now),
            snapshot=snapshot,
            decision=decision,
            acted=acted,
            leader=leader,
            shadow=self._settings.shadow,
            signal_age=now - self._previous.observed_at if self._previous else None,
            next_delay=delay,
            error=error,
            detail=detail,
            estimates=policy_estimates(self._policy, decision),
            state_saved_at=None if saved is None else self._timeline.to_wall(saved),
            latencies=latencies,
            slo_seconds=self._settings.workload.slo_seconds,
            scaled_to=scaled_to,
        )
        self._log_decision(report)
        self._emit(report)
        return report

    # ---- between ticks --------------------------------------------------------------------------

    def watch(self) -> TickReport | None:
        """Between ticks: read the queue's counts and let the policy answer a surge now.

        Waiting for the next tick costs a burst up to a tick of warm-up on every pod it needs. So
        every ``watch_seconds`` the acting leader of a live target reads the counts alone (one
        Redis round trip), and only when jobs wait that arrived since the tick, more than the
        Ready pods start within the SLO where both the target and the policy can tell that from
        counts (:meth:`_surge_possible`), does it read the target and ask the policy
        (:class:`~autoscaler.engine.snapshot.SurgeResponder`). A
        scale-up the policy answers is applied and reported like a tick's decision, with reason
        ``surge``. Returns that report, else None. Never raises: whatever fails here, the next
        tick reads everything again and handles it.
        """
        with self._lock:
            try:
                return self._watch()
            except (SourceUnavailableError, TargetUnavailableError):
                return None  # the tick will say so, once
            except Exception:
                log.exception("watch failed", extra={"fields": {"target": self.name}})
                return None

    def _watch(self) -> TickReport | None:
        settings, policy, previous = self._settings, self._policy, self._previous
        if not (settings.workload.watching and isinstance(policy, SurgeResponder)) or previous is None:
            return None
        if not self.may_act():
            return None
        pulse = self.source.pulse()
        if pulse.waiting <= 0 or arrivals_between(previous, pulse) <= 0:
            return None
        if not self._surge_possible(policy, pulse.waiting):
            return None
        pulse = replace(pulse, observed_at=self._timeline.from_wall(pulse.observed_at))
        state = self._on_timeline(self.target.observe())
        self._take_startups(state)  # the next tick's to report
        now = self._timeline.now()
        # A pulse has no worker states: the tick's are the newest known.
        signals = replace(pulse, busy_by_worker=previous.busy_by_worker)
        snapshot = self._snapshot(now, state, signals, settings.workload)
        snapshot = replace(snapshot, service_times=(), startup_times=())
        decision = policy.surge(snapshot)
        if decision is None:
            return None
        decision = within_bounds(decision, settings.workload)
        if decision.desired <= snapshot.current_replicas:
            return None
        scaled_to, failure = self._scale(decision, state, snapshot)
        lost = isinstance(failure, LeadershipLostError)
        error = None if failure is None else "leadership-lost" if lost else "scale-failed"
        if failure is not None:
            fields = {"target": self.name, "error": error, "detail": str(failure)}
            log.warning("surge scale-up failed", extra={"fields": fields})
        return self._decided(
            now,
            snapshot,
            decision,
            acted=failure is None,
            leader=not lost,
            delay=settings.workload.watch_seconds,
            error=error,
            detail=None if failure is None else str(failure),
            scaled_to=scaled_to,
        )

    def _surge_possible(self, policy: Policy, waiting: int) -> bool:
        """False when the Ready pods, counted from the target's memory, leave the policy no surge.

        As the simulator does (:class:`~autoscaler.engine.snapshot.SurgeGate`): a queue the Ready
        pods start within the SLO is no surge, and reading the target for it would cost a scale
        read from the API server every watch interval while jobs wait. True whenever either side
        cannot answer from counts alone.
        """
        if not isinstance(policy, SurgeGate) or not isinstance(self.target, ReadyCount):
            return True
        ready = self.target.ready_pods()
        return ready is None or policy.surge_possible(waiting, ready * self._settings.workload.slots_per_pod)

    def _read_source(self) -> tuple[QueueSignals | None, str | None]:
        """The signals, or None and the error kind (the tick then holds on a stale snapshot)."""
        try:
            signals = self.source.read()
            return replace(signals, observed_at=self._timeline.from_wall(signals.observed_at)), None
        except SourceUnavailableError as exc:
            fields = {"target": self.name, "error": str(exc)}
            log.warning("signals unavailable, holding", extra={"fields": fields})
            return None, "source-unavailable"
        except Exception:  # a decoding bug must not look like an empty queue either
            log.exception("reading signals failed, holding", extra={"fields": {"target": self.name}})
            return None, "source-error"

    def _take_startups(self, state: TargetState) -> None:
        """Keep ``state``'s startup samples for the next decision, but none of a pod counted already.

        A target reports each pod's startup once per process; a new process lists the pods and
        reports those Ready already, whose samples the state it restored holds (see
        :mod:`autoscaler.learned_state`). A sample without a pod id is always kept.
        """
        counted = self._learned.counted
        pending = {p for p, _ in self._pending_startups}
        for pod, seconds in state.startups():
            if pod is not None and (pod in counted or pod in pending):
                continue
            self._pending_startups.append((pod, seconds))
            pending.add(pod)

    def _on_timeline(self, state: TargetState) -> TargetState:
        """``state`` with its wall-clock times (read just now) moved onto the loop's timeline.

        By the offset of the moment, so that ``now - created_at`` is the age the wall clock gives.
        Its startup times are durations, on the target's own clock: they need no moving.
        """
        offset = self._timeline.offset()
        pods = tuple(
            replace(
                p,
                created_at=p.created_at + offset,
                ready_at=None if p.ready_at is None else p.ready_at + offset,
            )
            for p in state.pods
        )
        return replace(state, observed_at=state.observed_at + offset, pods=pods)

    def _snapshot(
        self, now: float, state: TargetState, signals: QueueSignals | None, workload: WorkloadSpec
    ) -> Snapshot:
        busy = signals.busy_by_worker if signals else {}
        pods = tuple(replace(p, busy_slots=busy.get(p.name, 0)) for p in state.pods)
        base = Snapshot(
            now=now,
            waiting=0,
            in_flight=0,
            arrivals=0,
            interval=0.0,
            current_replicas=state.replicas,
            pods=pods,
            slots_per_pod=workload.slots_per_pod,
            stale=True,
        )
        if signals is None or now - signals.observed_at > STALE_TICKS * workload.tick_seconds:
            # Keep the last known queue numbers for the log; the policy must hold either way.
            last = self._previous
            return replace(base, waiting=last.waiting, in_flight=last.in_flight) if last else base
        previous = self._previous
        return replace(
            base,
            waiting=signals.waiting,
            in_flight=signals.in_flight,
            arrivals=arrivals_between(previous, signals) if previous else 0,
            # The span the arrivals were counted over: between the two reads of the counter, not
            # between two ticks' clocks (a slow target read would stretch one and not the other).
            # The first tick has nothing to difference: interval 0 tells the estimators "no data".
            interval=max(0.0, signals.observed_at - previous.observed_at) if previous else 0.0,
            service_times=tuple(self._pending_services),
            startup_times=tuple(seconds for _, seconds in self._pending_startups),
            stale=False,
        )

    @staticmethod
    def _should_act(snapshot: Snapshot, decision: Decision, leader: bool, shadow: bool) -> bool:
        if snapshot.stale or shadow or not leader:
            return False
        if decision.desired != snapshot.current_replicas:
            return True
        # Same count, but pods beyond it still running (e.g. a scale-down the target has not
        # finished): let the target prefer the policy's picks.
        active = sum(1 for p in snapshot.pods if p.phase is not PodPhase.DRAINING)
        return bool(decision.remove) and decision.desired < active

    def _reset_policy(self, exc: Exception) -> bool:
        """Replace a policy that raised on ``policy_reset_after_errors`` ticks in a row by a fresh one.

        Holding on with it holds the replica count for as long as the process lives, whatever the
        load does: what keeps failing is its learned state, since each tick's snapshot is new. The
        fresh one is built from the same config (the daemon's own ``build_policy``) and starts cold,
        as on a new queue: it neither restores the saved state nor replays the source's history,
        since the failing state was learned from those (and saved from it). Its own state replaces
        the saved one at the next save. Samples not delivered yet (startups, service times) still
        reach it. Logged once per reset; returns whether the policy was replaced.
        """
        fields: dict[str, object] = {
            "target": self.name,
            "policy": self._policy.name,
            "errors": self.policy_errors,
            "error": f"{type(exc).__name__}: {exc}",
        }
        if self._policy_factory is None:
            return False
        try:
            fresh = self._policy_factory()
        except Exception as build_exc:  # the config was valid when loaded: try again at the next error
            log.exception(
                "cannot build a fresh policy", extra={"fields": {**fields, "build_error": str(build_exc)}}
            )
            return False
        self._policy = fresh
        self.policy_errors = 0
        self.policy_resets += 1
        self._learned.skip_restore()
        self._learned.counted.clear()  # the fresh policy holds none of the samples counted so far
        self._needs_warm_start = False
        log.error(
            "policy kept failing: replaced by a fresh one (cold start, same config)",
            extra={"fields": fields},
        )
        return True

    def _failed(
        self,
        now: float,
        kind: str,
        exc: Exception,
        latencies: tuple[float, ...] = (),
        *,
        policy_reset: bool = False,
    ) -> TickReport:
        """A tick that could not decide: hold (do nothing) and come back after a backoff."""
        delay = self._backoff.next_delay()
        self._log_failure(kind, exc, delay)
        last = self._previous
        report = TickReport(
            target=self.name,
            now=self._timeline.to_wall(now),
            snapshot=None,
            decision=None,
            acted=False,
            leader=self.leader.is_leader(),
            shadow=self._settings.shadow,
            signal_age=now - last.observed_at if last else None,
            next_delay=delay,
            error=kind,
            detail=str(exc),
            latencies=latencies,
            slo_seconds=self._settings.workload.slo_seconds,
            policy_reset=policy_reset,
        )
        self._emit(report)
        return report

    def _log_failure(self, kind: str, exc: Exception, delay: float) -> None:
        expected = isinstance(exc, TargetUnavailableError | SourceUnavailableError)
        fields = {"target": self.name, "error": kind, "detail": str(exc), "retry_in": round(delay, 3)}
        level = logging.WARNING if expected else logging.ERROR
        log.log(level, "tick failed, holding", extra={"fields": fields}, exc_info=None if expected else exc)

    def _log_decision(self, report: TickReport) -> None:
        snap, decision = report.snapshot, report.decision
        assert snap is not None and decision is not None
        fields = {
            "target": self.name,
            "policy": self._policy.name,
            "desired": decision.desired,
            "current": snap.current_replicas,
            "reason": decision.reason,
            "terms": {k: round(v, 4) for k, v in decision.terms.items()},
            "remove": list(decision.remove),
            "waiting": snap.waiting,
            "in_flight": snap.in_flight,
            "arrivals": snap.arrivals,
            "ready": snap.ready,
            "starting": snap.starting,
            "stale": snap.stale,
            "shadow": report.shadow,
            "leader": report.leader,
            "acted": report.acted,
            "scaled_to": report.scaled_to,
            "error": report.error,
        }
        decision_log.info("decision", extra={"fields": fields})
        season = (report.estimates or {}).get("season_seconds", self._season)
        if season != self._season:  # found in the arrivals, or dropped: worth a line of its own
            change = {"target": self.name, "season_seconds": season, "previous": self._season}
            log.info("forecast season changed", extra={"fields": change})
            self._season = season

    def _emit(self, report: TickReport) -> None:
        # Metrics first: whoever sees this report as ``last_report`` finds /metrics already counting it.
        if self._observer is not None:
            try:
                self._observer.observe_tick(report)
            except Exception:  # metrics must never stop scaling
                log.exception("metrics observer failed")
        self.reported_monotonic = time.monotonic()
        self.last_report = report

    # ---- running ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; the time a tick takes is part of its period, not added to it.

        After a tick that went well, the wait for the next one is spent watching (:meth:`watch`).
        """
        while not stop.is_set():
            started = time.monotonic()
            healthy = False
            try:
                report = self.tick()
                delay, healthy = report.next_delay, report.error is None
            except Exception:  # tick() handles its failures; this is the last line of defence
                log.exception("tick crashed", extra={"fields": {"target": self.name}})
                delay = self._backoff.next_delay()
            self._wait(stop, started + delay, watching=healthy)
        with self._lock:
            self.save_state(force=True)  # what the next process starts from

    def _wait(self, stop: threading.Event, until: float, *, watching: bool) -> None:
        """Sleep until ``until`` (monotonic) or ``stop``; watch every ``watch_seconds`` meanwhile."""
        while not stop.is_set():
            left = until - time.monotonic()
            step = self._settings.workload.watch_seconds
            if not (watching and self._settings.workload.watching) or left <= step:
                stop.wait(max(0.0, left))
                return
            if stop.wait(step):
                return
            self.watch()
