"""The autoscalers the startup-aware policy has to beat, behind the same :class:`Policy` interface.

They model what operators run today, faithfully enough that a replay says something about the real
thing: KEDA's Redis scaler feeding the Kubernetes HPA (``keda``), Knative's KPA (``kpa``) and a
fixed pool (``static:N``). None of them knows which pods are busy, so none names pods to remove:
the caller's default order applies, as the ReplicaSet controller's does in a cluster.

The HPA and KPA arithmetic follows the upstream controllers (``pkg/controller/podautoscaler`` in
Kubernetes, ``pkg/autoscaler/scaling`` in Knative); the comments name the rule each step mirrors.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from autoscaler.engine.snapshot import Decision, Snapshot, bounded
from autoscaler.engine.target import WorkloadSpec

# Guards comparisons of clock values that are sums of ticks against float rounding.
_EPS = 1e-9


def _hold(snapshot: Snapshot) -> Decision:
    """Stale signals hold the current count (as an HPA does when its metric cannot be read)."""
    return Decision(snapshot.current_replicas, "stale-signals-hold", {"current": snapshot.current_replicas})


def _require(checks: dict[str, bool], owner: object) -> None:
    """Raise naming every violated rule; ``checks`` maps a rule's text to whether it holds."""
    broken = [rule for rule, ok in checks.items() if not ok]
    if broken:
        raise ValueError(f"{type(owner).__name__} needs {', '.join(broken)}")


@dataclass(frozen=True, slots=True)
class KedaConfig:
    """A KEDA ``redis`` ScaledObject with the HPA defaults it generates.

    ``list_length`` is KEDA's ``listLength`` (AverageValue target per replica). The ``scale_up_*``
    and ``scale_down_*`` fields are the HPA ``behavior`` defaults: up by max(+100 %, +4 pods) per
    15 s with no stabilization; down by up to 100 % per 15 s after a 300 s stabilization window.
    On either path the first sync records the count it finds as a recommendation, as the HPA
    controller does, so a new HPA keeps the pods it found for one stabilization window.

    ``hpa_behavior`` "defaults" is that (the reference semantics every report uses). "none" is
    what an HPA without a ``behavior`` field does, which is what KEDA creates for a ScaledObject
    without ``advanced.horizontalPodAutoscalerConfig.behavior``: the controller's older rules. Up
    to max(2 x current, 4) per sync, no period; the highest recommendation of the last
    ``scale_down_stabilization`` seconds wins in either direction, so after a burst it scales *up*
    towards a recommendation the queue has since dropped below; no scale-down rate limit. The
    ``scale_up_*`` and ``scale_down_percent``/``period`` fields do not apply then.
    """

    list_length: float = 5.0
    sync_period: float = 15.0
    # Where the HPA's 15 s grid falls against the trace. None: its first sync is the first control
    # tick after the start (t = tick), not t = 0, when the queue has had no time to show anything.
    # On bursty traffic the phase alone moves results: on the Azure code trace the default (5 s)
    # gives 44 % within SLO at 119k pod-seconds, the independent reference's numbers, and 0 s gives
    # 48 % at 142k.
    sync_offset: float | None = None
    tolerance: float = 0.1
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period: float = 15.0
    scale_down_stabilization: float = 300.0
    min_replicas: int = 1
    hpa_behavior: str = "defaults"

    def __post_init__(self) -> None:
        _require(
            {
                "hpa_behavior 'defaults' or 'none'": self.hpa_behavior in ("defaults", "none"),
                "list_length > 0": self.list_length > 0,
                "sync_period > 0": self.sync_period > 0,
                "0 <= sync_offset < sync_period": self.sync_offset is None
                or 0 <= self.sync_offset < self.sync_period,
                "tolerance >= 0": self.tolerance >= 0,
                "scale_up_percent >= 0": self.scale_up_percent >= 0,
                "scale_up_pods >= 0": self.scale_up_pods >= 0,
                "scale_up_period > 0": self.scale_up_period > 0,
                "0 <= scale_down_percent <= 100": 0 <= self.scale_down_percent <= 100,
                "scale_down_period > 0": self.scale_down_period > 0,
                "scale_down_stabilization >= 0": self.scale_down_stabilization >= 0,
                # KEDA with minReplicaCount 0 hands 0<->1 to its own activation loop; not modelled.
                "min_replicas >= 1": self.min_replicas >= 1,
            },
            self,
        )

    @classmethod
    def tuning_grid(cls) -> dict[str, list[float]]:
        """The seed project's sweep: the only knob KEDA users usually touch."""
        return {"list_length": [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]}


class KedaPolicy:
    """KEDA's Redis list scaler driving an HPA on the waiting-queue length.

    The HPA runs on its own 15 s clock whatever the caller's tick: between syncs the previous
    answer is repeated. It sees only the queue length and the replica count, so it needs a standing
    backlog of ``list_length`` per replica to hold capacity, and it never names pods to remove.
    """

    def __init__(self, workload: WorkloadSpec, config: KedaConfig | None = None) -> None:
        self.workload = workload
        self.config = config or KedaConfig()
        self._desired: int | None = None
        offset = self.config.sync_offset
        self._next_sync = workload.tick_seconds % self.config.sync_period if offset is None else offset
        self._recommendations: deque[tuple[float, int]] = deque()
        self._synced = False  # whether the first sync has recorded its initial recommendation
        self._up_events: deque[tuple[float, int]] = deque()
        self._down_events: deque[tuple[float, int]] = deque()

    @property
    def name(self) -> str:
        return f"keda(listLength={self.config.list_length:g})"

    @property
    def _legacy(self) -> bool:
        """An HPA without ``behavior``: the controller's older normalization (see KedaConfig)."""
        return self.config.hpa_behavior == "none"

    def decide(self, snapshot: Snapshot) -> Decision:
        snapshot = bounded(snapshot)  # a 400-digit queue length overflowed the usage ratio
        if snapshot.now < self._next_sync - _EPS:
            held = snapshot.current_replicas if self._desired is None else self._desired
            return Decision(held, "hpa-between-syncs", {"next_sync": self._next_sync})
        if snapshot.stale:
            return _hold(snapshot)
        decision = self._sync(snapshot)
        self._desired = decision.desired
        self._schedule_next_sync(snapshot.now)
        return decision

    def _schedule_next_sync(self, now: float) -> None:
        # The HPA's resync period is a fixed grid; a caller ticking slower just samples it late.
        # Jump arithmetically: live clocks are epoch seconds, so stepping one period at a time from
        # the grid's origin would take millions of iterations on the first tick.
        period = self.config.sync_period
        if self._next_sync <= now + _EPS:
            self._next_sync += period * (math.floor((now + _EPS - self._next_sync) / period) + 1)

    def _sync(self, snapshot: Snapshot) -> Decision:
        cfg, now = self.config, snapshot.now
        current = snapshot.current_replicas
        if not self._synced:
            # recordInitialRecommendation, on both paths: a new HPA (or a restarted controller)
            # holds the count it finds for a stabilization window before it scales below it.
            self._recommendations.append((now, current))
            self._synced = True
        max_replicas = self.workload.max_replicas
        min_replicas = min(cfg.min_replicas, max_replicas)
        # reconcileAutoscaler: out-of-range counts are clamped without consulting the metric.
        if current > max_replicas:
            return self._record(now, current, max_replicas, "hpa-above-max", {})
        if current < min_replicas:
            return self._record(now, current, min_replicas, "hpa-below-min", {})

        metric_desired, ratio = self._metric_replicas(snapshot.waiting, current)
        terms = {"waiting": float(snapshot.waiting), "usage_ratio": ratio, "metric_desired": metric_desired}
        if self._legacy:
            stabilized = self._stabilize_legacy(now, metric_desired)
            desired, limit_reason = self._limit_legacy(current, stabilized)
        else:
            stabilized = self._stabilize(now, current, metric_desired)
            desired, limit_reason = self._rate_limit(now, current, stabilized)
        terms["stabilized"] = stabilized
        if limit_reason:
            reason = limit_reason
        elif stabilized != metric_desired:
            reason = "hpa-scale-down-stabilization"
        elif metric_desired == current and abs(ratio - 1.0) <= cfg.tolerance:
            reason = "hpa-within-tolerance"
        else:
            reason = "hpa-average-value"
        return self._record(now, current, desired, reason, terms)

    def _metric_replicas(self, waiting: int, current: int) -> tuple[int, float]:
        """GetExternalPerPodMetricReplicas: ceil(total / target) unless within the tolerance."""
        target = self.config.list_length
        ratio = waiting / (target * current)
        # The rule as documented (|ratio - 1| <= tolerance holds); the epsilon keeps 22/20 = 1.1
        # on the holding side of the boundary despite binary rounding.
        if abs(1.0 - ratio) <= self.config.tolerance + _EPS:
            return current, ratio
        return math.ceil(waiting / target - _EPS), ratio

    def _stabilize(self, now: float, current: int, recommendation: int) -> int:
        """stabilizeRecommendationWithBehaviors with the default windows (up 0 s, down 300 s).

        Scaling down goes only as far as the highest recommendation of the window allows, which is
        what keeps an HPA from flapping and also what keeps idle pods for five minutes.
        """
        window = self.config.scale_down_stabilization
        recs = self._recommendations
        while recs and recs[0][0] <= now - window + _EPS:
            recs.popleft()
        down_limit = max([recommendation, *(r for _, r in recs)])
        recs.append((now, recommendation))
        return min(max(current, recommendation), down_limit)

    def _stabilize_legacy(self, now: float, recommendation: int) -> int:
        """stabilizeRecommendation: the highest recommendation of the window, the new one included."""
        recs = self._recommendations
        while recs and recs[0][0] <= now - self.config.scale_down_stabilization + _EPS:
            recs.popleft()
        highest = max([recommendation, *(r for _, r in recs)])
        recs.append((now, recommendation))
        return highest

    def _limit_legacy(self, current: int, desired: int) -> tuple[int, str]:
        """convertDesiredReplicasWithRules: at most max(2 x current, 4) per sync, min..max replicas."""
        floor = min(self.config.min_replicas, self.workload.max_replicas)
        limit = min(max(2 * current, 4), self.workload.max_replicas)
        if desired > limit:
            return limit, "hpa-scale-up-limit"
        if desired < floor:
            return floor, "hpa-min-replicas"
        return desired, ""

    def _rate_limit(self, now: float, current: int, desired: int) -> tuple[int, str]:
        """convertDesiredReplicasWithBehaviorRate with the default scaling policies."""
        cfg = self.config
        if desired > current:
            start = self._period_start(now, current, cfg.scale_up_period)
            limit = max(start + cfg.scale_up_pods, math.ceil(start * (1 + cfg.scale_up_percent / 100)))
            limit = min(max(limit, current), self.workload.max_replicas)
            if desired > limit:
                return limit, "hpa-scale-up-limit"
        elif desired < current:
            start = self._period_start(now, current, cfg.scale_down_period)
            floor = min(cfg.min_replicas, self.workload.max_replicas)
            # Go's int32() truncation of the percent policy; 100 % (the default) means no limit.
            # Capped at the current count, as the HPA caps it: with more replicas at the period's
            # start than now (someone scaled down, or a clamp to the maximum), a scale-down
            # recommendation was answered with a scale-up.
            limit = min(int(start * (1 - cfg.scale_down_percent / 100)), current)
            if desired < max(floor, limit):
                return max(floor, limit), "hpa-min-replicas" if floor >= limit else "hpa-scale-down-limit"
        return desired, ""

    def _period_start(self, now: float, current: int, period: float) -> int:
        """Replica count at the start of the rate-limit period (current minus net recent change)."""
        added = sum(n for t, n in self._up_events if t > now - period + _EPS)
        removed = sum(n for t, n in self._down_events if t > now - period + _EPS)
        return current - added + removed

    def _record(
        self, now: float, current: int, desired: int, reason: str, terms: dict[str, float]
    ) -> Decision:
        horizon = max(self.config.scale_up_period, self.config.scale_down_period)
        for events in (self._up_events, self._down_events):
            while events and events[0][0] <= now - horizon:
                events.popleft()
        if desired > current:
            self._up_events.append((now, desired - current))
        elif desired < current:
            self._down_events.append((now, current - desired))
        return Decision(desired, reason, {**terms, "current": float(current)})


KPA_MIN_STABLE_WINDOW = 6.0
"""Knative's shortest stable window (``WindowMin``): its autoscaler refuses one below 6 s."""

KPA_MIN_PANIC_WINDOW = 1.0
"""Knative's shortest panic window: the percentage of the stable window must leave at least one
1 s metric bucket. Shorter, nothing is averaged: a window of 1e-10 s held no sample at all (below
the clock tolerance) and the average divided by zero."""


@dataclass(frozen=True, slots=True)
class KpaConfig:
    """Knative Pod Autoscaler settings (``config-autoscaler`` names in comments).

    ``target`` is the per-pod concurrency target (``autoscaling.knative.dev/target``); when unset it
    is ``slots_per_pod × utilization`` (container-concurrency × target-utilization-percentage).
    """

    target: float | None = None
    utilization: float = 0.7  # container-concurrency-target-percentage
    stable_window: float = 60.0  # stable-window
    panic_window: float = 6.0  # panic-window-percentage 10 % of the stable window
    panic_threshold: float = 2.0  # panic-threshold-percentage 200
    max_scale_up_rate: float = 1000.0  # max-scale-up-rate
    max_scale_down_rate: float = 2.0  # max-scale-down-rate

    def __post_init__(self) -> None:
        stable, panic = self.stable_window, self.panic_window
        panic_rule = f"{KPA_MIN_PANIC_WINDOW:g} <= panic_window <= stable_window"
        _require(
            {
                "target > 0": self.target is None or self.target > 0,
                "0 < utilization <= 1": 0 < self.utilization <= 1,
                f"stable_window >= {KPA_MIN_STABLE_WINDOW:g}": stable >= KPA_MIN_STABLE_WINDOW,
                panic_rule: KPA_MIN_PANIC_WINDOW <= panic <= stable,
                "panic_threshold > 0": self.panic_threshold > 0,
                "max_scale_up_rate > 1": self.max_scale_up_rate > 1,
                "max_scale_down_rate > 1": self.max_scale_down_rate > 1,
            },
            self,
        )

    @classmethod
    def tuning_grid(cls) -> dict[str, list[float]]:
        return {"utilization": [0.3, 0.5, 0.7, 0.9], "stable_window": [30.0, 60.0, 120.0]}


class KpaPolicy:
    """Knative's concurrency autoscaler: a 60 s average, and a 6 s one that can only push up.

    Concurrency is what the queue holds plus what is being served, sampled once per call. It knows
    nothing of warm-up: panic mode reacts to a burst within seconds but pods still take their
    startup time to help.
    """

    def __init__(self, workload: WorkloadSpec, config: KpaConfig | None = None) -> None:
        self.workload = workload
        self.config = config or KpaConfig()
        self.target = self.config.target or workload.slots_per_pod * self.config.utilization
        self._samples: deque[tuple[float, int]] = deque()
        self._panic_since: float | None = None
        self._max_panic_pods = 0

    @property
    def name(self) -> str:
        return f"kpa(target={self.target:g})"

    def _averages(self, now: float) -> tuple[float, float]:
        cfg = self.config
        while self._samples and self._samples[0][0] <= now - cfg.stable_window + _EPS:
            self._samples.popleft()
        stable = [c for _, c in self._samples]
        panic = [c for t, c in self._samples if t > now - cfg.panic_window + _EPS]
        return sum(stable) / len(stable), sum(panic) / len(panic)

    def decide(self, snapshot: Snapshot) -> Decision:
        snapshot = bounded(snapshot)  # a 400-digit queue length overflowed the average
        if snapshot.stale:
            return _hold(snapshot)
        cfg, now = self.config, snapshot.now
        self._samples.append((now, snapshot.waiting + snapshot.in_flight))
        stable_avg, panic_avg = self._averages(now)

        # scaling/autoscaler.go: rates are relative to ready pods, counted as at least one.
        ready = max(1, snapshot.ready)
        max_up = math.ceil(cfg.max_scale_up_rate * ready)
        max_down = math.floor(ready / cfg.max_scale_down_rate)
        stable_pods = math.ceil(stable_avg / self.target - _EPS)
        panic_pods = math.ceil(panic_avg / self.target - _EPS)
        desired = min(max(stable_pods, max_down), max_up)
        desired_panic = min(max(panic_pods, max_down), max_up)

        over_threshold = panic_pods / ready >= cfg.panic_threshold
        if over_threshold:
            self._panic_since = now  # entering panic, or extending it
        elif self._panic_since is not None and self._panic_since + cfg.stable_window < now:
            self._panic_since = None
            self._max_panic_pods = 0
        reason = "kpa-stable"
        if self._panic_since is not None:
            reason = "kpa-panic"
            # Provision for the larger signal, and never scale down while panicking.
            desired = max(desired, desired_panic, self._max_panic_pods)
            self._max_panic_pods = desired
        desired = min(max(desired, self.workload.min_replicas), self.workload.max_replicas)
        terms = {
            "stable_concurrency": stable_avg,
            "panic_concurrency": panic_avg,
            "target": self.target,
            "ready": float(snapshot.ready),
        }
        return Decision(desired, reason, terms)


class StaticPolicy:
    """A fixed pool: the over-provisioning operators fall back on when autoscaling hurts."""

    def __init__(self, replicas: int) -> None:
        if replicas < 1:
            raise ValueError(f"static pool needs at least 1 replica, got {replicas}")
        self.replicas = replicas

    @property
    def name(self) -> str:
        return f"static:{self.replicas}"

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(self.replicas, "static", {"replicas": float(self.replicas)})
