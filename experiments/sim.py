"""Discrete-event replay of a job trace against a worker pool driven by any :class:`Policy`.

The model (README.md, "How it compares with KEDA"): pods have ``slots_per_pod`` job slots and become ready a
startup time after creation; one FIFO queue; the policy is asked every ``tick_seconds`` from t=0 with
a :class:`Snapshot` built from the simulated state, exactly what the daemon would observe. Between
ticks, a policy that answers surges is shown the queue every ``watch_seconds``, as the daemon's
watch does, and may scale up at once.

Speed is the point of the design, because tuning replays the same trace hundreds of times:

* Jobs are never objects. Arrivals and service times are flat lists; a job is its index.
* Every slot of every serving or starting pod is one heap entry ``(free_at, pod, job)``. A starting
  pod's slots are simply free at its ready time, so warm-up needs no event of its own. The next job
  in FIFO order takes the slot that frees first and starts at ``max(arrival, free_at)``; when several
  are already free, that is the one idle longest, which is how Redis serves blocked ``BLPOP`` /
  ``XREADGROUP`` workers. One ``heapreplace`` per job.
* The pod set only changes at ticks, so between ticks the loop assigns every job that starts by the
  next tick and stops; the tick then reads busy slots and completions off the heap.
* Between ticks the watch looks every second, and nearly every look at a busy queue ends in "no
  surge" on the queue's length alone. A policy that says so from two counts
  (:class:`~autoscaler.engine.snapshot.SurgeGate`) is asked first, and the pods are not read.

Events at the same instant as a tick happen before it: a tick at ``T`` sees arrivals, starts and
completions at times ``<= T``. A job completes exactly once: it is reported to the policy either
when its slot is reused or at the first tick at or after its completion, whichever comes first
(its slot entry is then marked so neither can report it again).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from autoscaler.engine.snapshot import (
    Decision,
    PodPhase,
    PodView,
    Policy,
    Snapshot,
    SurgeGate,
    SurgeResponder,
)
from autoscaler.engine.target import WorkloadSpec, within_bounds
from experiments.distributions import Distribution, Fixed

ProgressFn = Callable[[int, int], None]
_PROGRESS_EVERY_TICKS = 200
_LIVE, _DRAINING, _GONE = 0, 1, 2


MAX_TICKS = 2_000_000
"""Control ticks one replay may take (about 115 days at a 5 s tick, minutes of wall time), and
watch looks one tick may take. The CLI refuses a trace or a ``--tick`` that needs more before it
starts; a replay that gets there all the same (a queue that drains far slower than the trace
arrives, at a tiny tick) stops with :class:`TickLimitError` instead of running for hours."""


STALL_STARTUPS = 2
"""A stall is declared only after this many of the longest startup any pod drew: a pod still
warming up is no stall, and a policy may lose one warm-up to a pod it removed while starting.
Against ``stall_seconds`` alone, an admitted startup of 8 h (30,000 s) was reported as a policy
that "kept no replica long enough to become ready" at 6 h, though its pod was ready at 8.3 h."""


class SimulationError(RuntimeError):
    """The replay cannot finish (e.g. the policy keeps no replica while jobs wait)."""


class TickLimitError(SimulationError):
    """The replay took more than ``max_ticks`` ticks, or one tick would take more watch looks.

    ``looks`` says which: the watch's interval (``watch_seconds``) is what is out of proportion
    then, else the tick's (``tick_seconds``).
    """

    def __init__(self, message: str, *, tick_seconds: float, watch_seconds: float, looks: bool) -> None:
        super().__init__(message)
        self.tick_seconds, self.watch_seconds, self.looks = tick_seconds, watch_seconds, looks


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything about the simulated cluster except the trace and the policy."""

    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    startup: Distribution = field(default_factory=lambda: Fixed(30.0))
    initial_replicas: int = 1
    seed: int = 0
    # Give up when jobs wait and none starts for this long (or 10 service times, or
    # STALL_STARTUPS times the longest startup a pod drew, if longer): a policy that never keeps
    # a replica until it is ready would otherwise loop forever.
    stall_seconds: float = 6 * 3600.0
    # Give up (TickLimitError) after this many ticks, or before a tick that would look this often.
    max_ticks: int = MAX_TICKS

    def __post_init__(self) -> None:
        if not 0 <= self.initial_replicas <= self.workload.max_replicas:
            top = self.workload.max_replicas
            raise ValueError(f"initial_replicas must be within 0..{top}, got {self.initial_replicas}")


@dataclass(frozen=True, slots=True)
class Timeline:
    """Per-tick state after the policy acted: for plots and for checking a run by eye."""

    times: np.ndarray
    replicas: np.ndarray  # the spec count (non-draining pods)
    ready: np.ndarray
    waiting: np.ndarray
    in_flight: np.ndarray


@dataclass(frozen=True, slots=True)
class SimResult:
    """Per-job start times plus the bill. ``latency = wait + service`` so it is never < service."""

    policy: str
    arrivals: np.ndarray
    service: np.ndarray
    start: np.ndarray
    end: float
    pod_created: np.ndarray
    pod_exit: np.ndarray
    scale_events: int
    max_replicas: int
    completions_reported: int
    timeline: Timeline

    @property
    def wait(self) -> np.ndarray:
        return np.asarray(self.start - self.arrivals, dtype=np.float64)

    @property
    def latency(self) -> np.ndarray:
        return np.asarray(self.wait + self.service, dtype=np.float64)

    @property
    def finish(self) -> np.ndarray:
        return np.asarray(self.start + self.service, dtype=np.float64)

    @property
    def pod_seconds(self) -> float:
        return float(np.sum(self.pod_exit - self.pod_created))


class _Cluster:
    """Mutable simulation state; methods are the event phases of one tick."""

    def __init__(self, arrivals: np.ndarray, service: np.ndarray, config: SimConfig) -> None:
        self.arrivals: list[float] = arrivals.tolist()
        self.service: list[float] = service.tolist()
        self.slots = config.workload.slots_per_pod
        self.startup = config.startup
        self.rng = np.random.default_rng(config.seed)
        self.starts: list[float] = []  # start time of job j, appended in FIFO order
        self.next_job = 0
        self.heap: list[tuple[float, int, int]] = []  # (free_at, pod, job or -1) per available slot
        self.drain_jobs: list[tuple[float, int, int]] = []  # jobs still running on draining pods
        self.done: list[int] = []  # jobs completed since the last tick reported them
        self.reported = 0
        # Per pod, indexed by pod id.
        self.created: list[float] = []
        self.ready_at: list[float] = []
        self.exit_at: list[float] = []
        self.state: list[int] = []
        self.warm_at_start: list[bool] = []
        self.names: list[str] = []
        self.views: dict[int, PodView] = {}
        self.live: list[int] = []  # non-draining pods, creation order: the spec count
        self.draining: list[int] = []
        self.busy: dict[int, int] = {}
        self.arrived_before = 0
        self.longest_startup = 0.0  # of any pod created so far: how long a stall may be a warm-up

    # -- pods ---------------------------------------------------------------------------------
    def create(self, count: int, now: float, *, warm: bool = False) -> None:
        startups = np.zeros(count) if warm else self.startup.draw(self.rng, count)
        if count > 0:
            self.longest_startup = max(self.longest_startup, float(np.max(startups)))
        for startup in startups.tolist():
            pod = len(self.created)
            ready = now + startup
            self.created.append(now)
            self.ready_at.append(ready)
            self.exit_at.append(math.inf)
            self.state.append(_LIVE)
            self.warm_at_start.append(warm)
            self.names.append(f"pod-{pod}")
            self.live.append(pod)
            for _ in range(self.slots):
                heapq.heappush(self.heap, (ready, pod, -1))

    def remove(self, count: int, named: tuple[str, ...], now: float) -> None:
        """Take ``count`` pods out of the spec: ``named`` first, then starting, idle, busy (newest first)."""
        index = {self.names[p]: p for p in self.live}
        chosen = list(dict.fromkeys(index[n] for n in named if n in index))[:count]
        rest = [p for p in reversed(self.live) if p not in set(chosen)]
        rest.sort(key=lambda p: 0 if self.ready_at[p] > now else (2 if self.busy.get(p) else 1))
        chosen += rest[: count - len(chosen)]
        gone = set(chosen)
        for pod in chosen:
            running = [e for e in self.heap if e[1] == pod and e[2] >= 0]
            if running:
                self.state[pod] = _DRAINING
                self.exit_at[pod] = max(e[0] for e in running)
                self.drain_jobs += running
                self.draining.append(pod)
            else:
                self.state[pod] = _GONE
                self.exit_at[pod] = now
        self.live = [p for p in self.live if p not in gone]
        self.heap = [e for e in self.heap if e[1] not in gone]
        heapq.heapify(self.heap)

    # -- jobs ---------------------------------------------------------------------------------
    def assign(self, limit: float) -> None:
        """Start, in FIFO order, every job whose start time is ``<= limit`` (the hot loop)."""
        heap = self.heap
        if not heap:
            return
        arrivals, service, starts, done = self.arrivals, self.service, self.starts, self.done
        replace = heapq.heapreplace
        j, n = self.next_job, len(arrivals)
        while j < n:
            free_at, pod, previous = heap[0]
            arrival = arrivals[j]
            start = arrival if arrival > free_at else free_at
            if start > limit:
                break
            replace(heap, (start + service[j], pod, j))
            if previous >= 0:
                done.append(previous)
            starts.append(start)
            j += 1
        self.next_job = j

    def settle(self, now: float) -> None:
        """Record completions up to ``now``, count busy slots, retire drained pods."""
        busy: dict[int, int] = {}
        heap, done = self.heap, self.done
        marked = False
        for i, (free_at, pod, job) in enumerate(heap):
            if job >= 0:
                if free_at <= now:
                    done.append(job)
                    heap[i] = (free_at, pod, -1)
                    marked = True
                else:
                    busy[pod] = busy.get(pod, 0) + 1
        if marked:
            heapq.heapify(heap)
        if self.drain_jobs:
            still = []
            for entry in self.drain_jobs:
                if entry[0] <= now:
                    done.append(entry[2])
                else:
                    busy[entry[1]] = busy.get(entry[1], 0) + 1
                    still.append(entry)
            self.drain_jobs = still
            for pod in self.draining:
                if self.exit_at[pod] <= now:
                    self.state[pod] = _GONE
            self.draining = [p for p in self.draining if self.state[p] == _DRAINING]
        self.busy = busy

    # -- observation --------------------------------------------------------------------------
    def _view(self, pod: int, phase: PodPhase, now: float) -> PodView:
        busy = self.busy.get(pod, 0)
        view = self.views.get(pod)
        if view is None or view.phase is not phase or view.busy_slots != busy:
            ready = self.ready_at[pod] if self.ready_at[pod] <= now else None
            view = PodView(self.names[pod], phase, self.created[pod], busy, ready)
            self.views[pod] = view
        return view

    def _views(self, now: float, previous: float | None) -> tuple[list[PodView], list[float]]:
        """Every pod as seen at ``now``, and the startups of pods that became ready after ``previous``."""
        startups: list[float] = []
        views: list[PodView] = []
        cached, busy, ready_at = self.views.get, self.busy.get, self.ready_at
        serving, add = PodPhase.READY, views.append
        for pod in self.live:
            ready = ready_at[pod]
            if ready > now:
                add(self._view(pod, PodPhase.STARTING, now))
                continue
            if previous is not None and previous < ready and not self.warm_at_start[pod]:
                startups.append(ready - self.created[pod])
            # _view's cache test inlined for the common case (a ready pod as it was): the simulator
            # builds every pod's view at every tick and watch, its largest cost on long replays.
            view = cached(pod)
            if view is None or view.phase is not serving or view.busy_slots != busy(pod, 0):
                view = self._view(pod, serving, now)
            add(view)
        views += [self._view(pod, PodPhase.DRAINING, now) for pod in self.draining]
        return views, startups

    def snapshot(self, now: float, interval: float, previous: float) -> Snapshot:
        arrived = bisect_right(self.arrivals, now)
        views, startups = self._views(now, previous)
        service = self.service
        completed = tuple(service[j] for j in self.done)
        self.reported += len(completed)
        self.done.clear()
        snap = Snapshot(
            now=now,
            waiting=arrived - self.next_job,
            in_flight=sum(self.busy.values()),
            arrivals=arrived - self.arrived_before,
            interval=interval,
            current_replicas=len(self.live),
            pods=tuple(views),
            service_times=completed,
            startup_times=tuple(startups),
            slots_per_pod=self.slots,
        )
        self.arrived_before = arrived
        return snap

    def peek(self, now: float, last_tick: float, gate: SurgeGate | None = None) -> Snapshot | None:
        """What the watch sees at ``now`` between ticks, or None when no job waits that arrived since.

        Arrivals and interval count from ``last_tick``; completions and startups are left for the
        next tick to report (each exactly once), so peeking changes nothing a tick will see. With a
        ``gate`` that says the queue and the ready slots leave nothing to answer, the pods are not
        read either (None).
        """
        arrived = bisect_right(self.arrivals, now)
        if arrived in {self.arrived_before, self.next_job}:
            return None
        if gate is not None and not gate.surge_possible(
            arrived - self.next_job, self.ready_count(now) * self.slots
        ):
            return None
        self.settle(now)
        views, _ = self._views(now, None)
        return Snapshot(
            now=now,
            waiting=arrived - self.next_job,
            in_flight=sum(self.busy.values()),
            arrivals=arrived - self.arrived_before,
            interval=now - last_tick,
            current_replicas=len(self.live),
            pods=tuple(views),
            slots_per_pod=self.slots,
        )

    def ready_count(self, now: float) -> int:
        return sum(1 for p in self.live if self.ready_at[p] <= now)


def simulate(
    arrivals: np.ndarray,
    service: np.ndarray,
    policy: Policy,
    config: SimConfig,
    progress: ProgressFn | None = None,
) -> SimResult:
    """Replay jobs (sorted ``arrivals`` from t=0, per-job ``service``) under ``policy``.

    Ticks run from t=0 every ``tick_seconds`` until the first tick at or after the last completion,
    so the policy observes every completion; that last decision is not applied. Pods still alive are
    billed until the last completion.
    """
    n = len(arrivals)
    if n == 0 or len(service) != n:
        raise ValueError(f"need at least one job and one service time per job (got {n} and {len(service)})")
    if arrivals[0] < 0 or np.any(np.diff(arrivals) < 0) or np.any(service < 0):
        raise ValueError("arrivals must be sorted and >= 0, service times >= 0")
    workload = config.workload
    tick = workload.tick_seconds
    cluster = _Cluster(arrivals, service, config)
    cluster.create(config.initial_replicas, 0.0, warm=True)
    times: list[float] = []
    replicas: list[int] = []
    ready: list[int] = []
    waiting: list[int] = []
    in_flight: list[int] = []
    scale_events = 0
    peak = config.initial_replicas
    end = math.inf
    stall = _StallGuard(max(config.stall_seconds, 10 * float(np.max(service))))
    responder = policy if workload.watching and isinstance(policy, SurgeResponder) else None
    # Asked once: a runtime protocol check costs ~9 us, and the watch runs after every tick.
    gate = responder if isinstance(responder, SurgeGate) else None
    _check_looks(config, watching=responder is not None)
    limit = config.max_ticks
    k = 0
    while True:
        if k >= limit:
            raise TickLimitError(
                f"the replay had not ended after {limit:,} ticks of {tick:g} s ({k * tick:,.6g} s "
                f"simulated, {cluster.next_job:,} of {n:,} jobs started)",
                tick_seconds=tick,
                watch_seconds=workload.watch_seconds,
                looks=False,
            )
        now = k * tick  # multiplied, not accumulated, so tick times stay exact
        previous = now - tick
        cluster.assign(now)
        cluster.settle(now)
        snap = cluster.snapshot(now, tick, previous)
        decision = policy.decide(snap)
        if cluster.next_job == n and math.isinf(end):
            end = float(np.max(np.asarray(cluster.starts) + service))
        if now >= end:
            break
        scale_events += _apply(cluster, decision, workload, now)
        peak = max(peak, len(cluster.live))
        times.append(now)
        replicas.append(len(cluster.live))
        ready.append(cluster.ready_count(now))
        waiting.append(snap.waiting)
        in_flight.append(snap.in_flight)
        stall.check(cluster.next_job, snap, policy, cluster.longest_startup)
        if responder is not None:
            scale_events += _watch(cluster, responder, gate, workload, now)
            peak = max(peak, len(cluster.live))
        if progress is not None and k % _PROGRESS_EVERY_TICKS == 0:
            progress(cluster.next_job, n)
        k += 1
    if progress is not None:
        progress(n, n)
    exits = np.minimum(np.asarray(cluster.exit_at), end)
    return SimResult(
        policy=policy.name,
        arrivals=arrivals,
        service=service,
        start=np.asarray(cluster.starts),
        end=end,
        pod_created=np.asarray(cluster.created),
        pod_exit=exits,
        scale_events=scale_events,
        max_replicas=peak,
        completions_reported=cluster.reported,
        timeline=Timeline(
            times=np.asarray(times),
            replicas=np.asarray(replicas),
            ready=np.asarray(ready),
            waiting=np.asarray(waiting),
            in_flight=np.asarray(in_flight),
        ),
    )


def _check_looks(config: SimConfig, *, watching: bool) -> None:
    """Raise :class:`TickLimitError` if one tick's watch would look more than ``max_ticks`` times.

    :func:`_watch` looks every ``watch_seconds`` within a tick: at 1e-300 s it took 5e300 looks to
    end the first tick, however few ticks the replay had.
    """
    workload = config.workload
    if not watching:
        return
    looks = workload.tick_seconds / workload.watch_seconds
    if looks > config.max_ticks:
        raise TickLimitError(
            f"a watch every {workload.watch_seconds:g} s looks {looks:,.6g} times a tick of "
            f"{workload.tick_seconds:g} s (at most {config.max_ticks:,})",
            tick_seconds=workload.tick_seconds,
            watch_seconds=workload.watch_seconds,
            looks=True,
        )


def _apply(cluster: _Cluster, decision: Decision, workload: WorkloadSpec, now: float) -> int:
    """Carry out a decision within the workload's min..max replicas; returns 1 if the count changed.

    The bounds are applied as the daemon's loop applies them (:func:`within_bounds`), whichever
    policy decided: a replay with ``--min-replicas 3`` under ``keda`` never goes below 3, as the
    daemon would not, though KEDA's own HPA minimum is 1.
    """
    desired = within_bounds(decision, workload).desired
    current = len(cluster.live)
    if desired > current:
        cluster.create(desired - current, now)
    elif desired < current:
        cluster.remove(current - desired, decision.remove, now)
    return int(desired != current)


def _watch(
    cluster: _Cluster, policy: SurgeResponder, gate: SurgeGate | None, workload: WorkloadSpec, tick_at: float
) -> int:
    """Between the tick at ``tick_at`` and the next, look every ``watch_seconds`` for a surge.

    The policy may then scale up at once; the timeline still records ticks only. ``gate`` is the
    policy itself when it can refuse from two counts (:class:`SurgeGate`), else None. Returns the
    number of scale events.
    """
    events = 0
    step, next_tick = workload.watch_seconds, tick_at + workload.tick_seconds
    i = 1
    while (now := tick_at + i * step) < next_tick - 1e-9:  # multiplied, not accumulated
        i += 1
        cluster.assign(now)
        snap = cluster.peek(now, tick_at, gate)
        if snap is None:
            continue
        decision = policy.surge(snap)
        if decision is None:
            continue
        decision = within_bounds(decision, workload)  # the loop's watch bounds it before comparing too
        if decision.desired > len(cluster.live):
            events += _apply(cluster, decision, workload, now)
    return events


@dataclass(slots=True)
class _StallGuard:
    """Ends a replay in which jobs wait and none starts for ``limit`` seconds, or for
    ``STALL_STARTUPS`` times the longest startup a pod has drawn, if longer.

    That happens only when the policy keeps no replica until it is ready (none at all, or pods
    removed while still starting, tick after tick); such a replay would never finish.
    """

    limit: float
    started: int = -1
    since: float = 0.0

    def check(self, started: int, snap: Snapshot, policy: Policy, longest_startup: float) -> None:
        if started != self.started or snap.waiting == 0:
            self.started, self.since = started, snap.now
        elif snap.now - self.since > (limit := max(self.limit, STALL_STARTUPS * longest_startup)):
            raise SimulationError(
                f"no job started for {limit:.0f} s while {snap.waiting} waited: "
                f"policy {policy.name} kept no replica long enough to become ready"
            )
