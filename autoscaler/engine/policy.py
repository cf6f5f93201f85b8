"""The startup-aware policy: estimators + forecaster + scale-down window around :func:`size`.

Per tick it folds the Snapshot into its estimators, forecasts the arrival rate over
H = startup p90 + tick (the earliest a pod ordered now can help, seen from the next decision),
and asks :func:`autoscaler.engine.sizing.size` for the replica count.

One knob, ``confidence``, trades cost against SLO attainment: it is the forecast quantile sized
for, and it caps the chance the queueing model may leave a job waiting past the SLO (never more
than 1 - confidence, and at most ``queue_miss_probability``).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from statistics import NormalDist
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.engine.estimators import BurstPersistence, SampleQuantiles, WindowedRate
from autoscaler.engine.forecast import MIN_TICKS_PER_SEASON, HoltParams, RateForecaster
from autoscaler.engine.period import PeriodDetector
from autoscaler.engine.sizing import SizingInputs, credible_burst_rate, size
from autoscaler.engine.snapshot import (
    MAX_COUNT,
    MIN_RATE_INTERVAL_SECONDS,
    Decision,
    Snapshot,
    bounded,
)
from autoscaler.engine.standing_pool import StandingPool
from autoscaler.engine.state import FORMAT, RowSpec, StateError, dump, load
from autoscaler.engine.surge import late_already, poisson_tail
from autoscaler.engine.target import WorkloadSpec

MIN_SERVICE_SECONDS = 1e-3
"""Floor of the service-time estimate. Jobs measured at 0 s (a cache hit, an instant failure) are
valid samples, but an estimate of 0 divides every capacity the sizing computes by zero."""


class StartupAwareConfig(BaseModel):
    """Knobs of the startup-aware policy. Defaults are the ones the README's numbers use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: float = Field(
        0.8, gt=0.5, lt=1.0, description="The cost-vs-SLO knob: higher buys more headroom."
    )
    queue_miss_probability: float = Field(
        0.01,
        gt=0,
        lt=1,
        description=(
            "At most this chance that a job waits past the SLO at the forecast rate (the queueing "
            "term; also capped by 1 - confidence). With the steady-traffic rate estimate the "
            "forecast no longer carries tick-to-tick noise as headroom, so this is the SLO budget "
            "itself: 1 % keeps steady Poisson traffic from 0.5 job/s up at >= 99.7 % on time."
        ),
    )
    steady_window_seconds: float = Field(
        600.0,
        ge=0,
        description=(
            "Fit the arrival rate as a line through up to this many seconds without a level shift, "
            "and use it instead of the Holt level whenever the two agree within noise. 0 turns it off."
        ),
    )
    drain_seconds: float | None = Field(
        None, gt=0, description="Drain a projected backlog within this long (default: the SLO)."
    )
    scale_down_window_startups: float = Field(
        1.0,
        ge=0,
        description="Hold the peak recommendation this many startup times (+1 tick) before scaling down.",
    )
    short_window_seconds: float = Field(10.0, gt=0, description="Window of the 'rate now' estimate.")
    long_window_seconds: float = Field(
        300.0,
        ge=0,
        description=(
            "Window of the long-run arrival rate. The part of the forecast above it (beyond Poisson "
            "noise) is sized for only as far as such excesses have lasted one horizon in the past: "
            "after a ten-second spike the forecast still reads high, and pods ordered on it come up "
            "to an empty queue. 0 takes every forecast at its word."
        ),
    )
    season_seconds: float | None = Field(
        None, gt=0, description="Season length for Holt-Winters (e.g. 86400); off when unset."
    )
    season_detect_max_seconds: float = Field(
        3600.0,
        ge=0,
        description=(
            "While `season_seconds` is unset, look for a period of up to this long in the arrivals "
            "(traffic on a clock: a batch every few minutes) and use it as the season once it has "
            "repeated three times. 0 turns the search off."
        ),
    )
    holt_alpha: float = Field(0.3, gt=0, le=1)
    holt_beta: float = Field(0.05, ge=0, le=1)
    holt_phi: float = Field(0.95, gt=0, le=1)
    holt_reference_seconds: float = Field(
        5.0,
        gt=0,
        description=(
            "The tick the Holt constants are per. On a shorter tick they are scaled to the same "
            "memory per second, so a faster look does not make a noisier forecast."
        ),
    )
    startup_quantile: float = Field(0.9, gt=0, lt=1)
    startup_min_samples: int = Field(3, ge=1)
    service_min_samples: int = Field(20, ge=1)
    standing_pool_window_seconds: float = Field(
        3600.0,
        ge=0,
        description=(
            "Keep at least the smallest pool that, added to what reactive scaling provided, would "
            "have met the SLO for `standing_pool_attainment` of the jobs of this many recent "
            "seconds. Pays for itself only on bursty traffic, and is zero elsewhere. 0 turns it off."
        ),
    )
    standing_pool_attainment: float = Field(0.85, gt=0, lt=1)
    surge_significance: float = Field(
        1e-5,
        gt=0,
        lt=1,
        description=(
            "Between ticks (the loop's watch), order pods at once when the queue is already too long "
            "for the ready pods and the arrivals since the tick are this unlikely at the rate the "
            "tick sized for (at least one job per tick). Steady Poisson traffic stays far above it."
        ),
    )
    max_step_up: int | None = Field(None, ge=1)
    max_step_down: int | None = Field(None, ge=1)

    @classmethod
    def tuning_grid(cls) -> dict[str, list[float]]:
        """The knobs `experiments tune` searches, with candidate values."""
        return {
            "confidence": [0.7, 0.8, 0.9, 0.95],
            "scale_down_window_startups": [1.0, 2.0, 4.0],
            "standing_pool_window_seconds": [0.0, 600.0, 1800.0],
            "standing_pool_attainment": [0.8, 0.9],
        }


class StartupAwarePolicy:
    """Sizes a worker pool for a latency SLO, ordering capacity one warm-up ahead."""

    STATE: ClassVar[tuple[str, ...]] = (
        "_rate_now",
        "_rate_long",
        "_service",
        "_startup",
        "forecaster",
        "_persistence",
        "_forecast_persistence",
        "_recent",
        "_pool",
        "_last_decision_at",
        "_raw_history",
        "_detector",
        "_season_model",
        "_season_orders",
    )
    """What it has learned (see :mod:`autoscaler.engine.state`); everything else is configuration."""
    STATE_ADDED: ClassVar[tuple[str, ...]] = ("_season_model", "_season_orders")
    ROWS: ClassVar[Mapping[str, RowSpec]] = {
        "_recent": (float, int),
        "_raw_history": (float, int),
        "_season_orders": (float, int),
    }

    def __init__(self, workload: WorkloadSpec, config: StartupAwareConfig | None = None) -> None:
        self.workload = workload
        self.config = config or StartupAwareConfig()
        cfg = self.config
        shortest = MIN_TICKS_PER_SEASON * workload.tick_seconds
        if cfg.season_seconds is not None and cfg.season_seconds < shortest:
            # Accepted, such a season was silently never fitted: the operator believed it in use.
            raise ValueError(
                f"season_seconds: {cfg.season_seconds:g} s is shorter than {MIN_TICKS_PER_SEASON} ticks "
                f"of {workload.tick_seconds:g} s ({shortest:g} s), too short to fit a seasonal profile"
            )
        self._z = NormalDist().inv_cdf(cfg.confidence)
        self._rate_now = WindowedRate(max(cfg.short_window_seconds, workload.tick_seconds))
        self._rate_long = (
            WindowedRate(max(cfg.long_window_seconds, workload.tick_seconds))
            if cfg.long_window_seconds > 0
            else None
        )
        self._service = SampleQuantiles(workload.service_seconds, cfg.service_min_samples)
        self._startup = SampleQuantiles(workload.startup_seconds, cfg.startup_min_samples, capacity=64)
        self.forecaster = RateForecaster(
            workload.tick_seconds,
            HoltParams(
                alpha=cfg.holt_alpha,
                beta=cfg.holt_beta,
                phi=cfg.holt_phi,
                reference_seconds=cfg.holt_reference_seconds,
            ),
            season_seconds=cfg.season_seconds,
            steady_window_seconds=cfg.steady_window_seconds,
        )
        self._persistence = BurstPersistence()
        self._forecast_persistence = BurstPersistence()
        self._recent: deque[tuple[float, int]] = deque()
        self._pool = (
            StandingPool(cfg.standing_pool_window_seconds, cfg.standing_pool_attainment)
            if cfg.standing_pool_window_seconds > 0
            else None
        )
        self._last_decision_at: float | None = None
        self._raw_history: deque[tuple[float, int]] = deque()
        # The season the forecast predicted with at the last decision (0: none); None before it.
        self._season_model: float | None = None
        # Pods sized for a predicted seasonal lift, by the moment they were ordered to serve from.
        self._season_orders: deque[tuple[float, int]] = deque()
        self._detector = (
            PeriodDetector(workload.tick_seconds, max_seconds=cfg.season_detect_max_seconds)
            if cfg.season_seconds is None and cfg.season_detect_max_seconds > 0
            else None
        )
        # The rate the last decision sized for, what a surge between ticks is measured against.
        # Not learned state: a restored policy decides once before it answers surges.
        self._sized_rate: float | None = None

    @property
    def name(self) -> str:
        return "startup-aware"

    @property
    def refits(self) -> int:
        """Amortised heavy steps so far (seasonal refits, pool refreshes, period checks), for benchmarks."""
        seasonal = self.forecaster.seasonal.fits if self.forecaster.seasonal else 0
        checks = self._detector.checks if self._detector else 0
        return seasonal + (self._pool.refreshes if self._pool else 0) + checks

    @property
    def startup_estimate(self) -> float:
        return self._startup.quantile(self.config.startup_quantile)

    @property
    def service_estimate(self) -> float:
        return max(self._service.capped_mean(), MIN_SERVICE_SECONDS)

    @property
    def season_seconds(self) -> float:
        """The season the forecast uses, configured or found in the arrivals (0: none)."""
        return self.forecaster.seasonal.season_seconds if self.forecaster.seasonal else 0.0

    def export_state(self) -> dict[str, Any]:
        """Everything learned so far as a JSON-ready document, for :meth:`restore_state`."""
        return {"format": FORMAT, "policy": self.name, "state": dump(self)}

    def restore_state(self, document: Mapping[str, Any]) -> list[str]:
        """Continue from an :meth:`export_state` document, all or nothing; returns the parts skipped.

        The knobs stay this policy's own: windows shorter than the saving policy's trim what they
        inherit at the next tick, and a part this config turns off (or on, or reshapes, such as the
        season) is skipped and named in the result. Raises :class:`StateError` for a document of
        another format or policy, or a malformed one; the policy is then unchanged.

        Malformed includes a document whose every field passes its checks and whose policy still
        cannot decide: a copy decides one quiet tick after the saved last one before the restore
        counts. Restored whole, such a document failed every tick of the process (the daemon
        held the count for good); refused, the daemon starts cold.
        """
        if document.get("format") != FORMAT:
            raise StateError(f"format: expected {FORMAT}, got {document.get('format')!r}")
        if document.get("policy") != self.name:
            raise StateError(f"policy: saved by {document.get('policy')!r}, this is {self.name!r}")
        skipped: list[str] = []
        before = {name: getattr(self, name) for name in self.STATE}  # load replaces, never mutates
        seasonal = self.forecaster.seasonal
        season = _detected_season(document) if self._detector is not None else None
        if season is not None:  # a detected season's profile exists only once found: make it to load into
            self.forecaster.set_season(season)
        try:
            load(self, document.get("state"), "state", skipped)
            self._try_a_tick()
        except StateError:
            for name, value in before.items():
                setattr(self, name, value)
            self.forecaster.seasonal = seasonal
            raise
        return skipped

    def _try_a_tick(self) -> None:
        """Raise :class:`StateError` if a copy of this policy cannot decide a quiet next tick."""
        tick = self.workload.tick_seconds
        now = (self._last_decision_at or 0.0) + tick
        try:  # a saved clock no snapshot takes (1e300: see MAX_CLOCK_SECONDS) is refused here too
            quiet = Snapshot(now=now, waiting=0, in_flight=0, arrivals=0, interval=tick, current_replicas=0)
            copy.deepcopy(self).decide(quiet)
        except Exception as exc:  # whatever it is, the next tick would meet it too
            raise StateError(
                f"state: the restored policy cannot decide ({type(exc).__name__}: {exc})"
            ) from exc

    def decide(self, snapshot: Snapshot) -> Decision:
        snapshot = bounded(snapshot)  # counts as a live source delivers them: see MAX_COUNT
        if snapshot.stale:
            return Decision(
                desired=snapshot.current_replicas,
                reason="stale-signals-hold",
                terms={"current": float(snapshot.current_replicas)},
            )
        if snapshot.arrivals < 0 or 0 < snapshot.interval < MIN_RATE_INTERVAL_SECONDS:
            # A counter that went below its previous reading tells nothing about this interval:
            # read as a count, one tick of -10^6 held the Holt variance, and the pool with it, at
            # the maximum for eleven minutes. Nor does one read again within a millisecond: its
            # count over 5e-324 s was an infinite rate. Either is an interval without data, as the
            # first tick is.
            snapshot = replace(snapshot, arrivals=0, interval=0.0)
        wl, cfg = self.workload, self.config
        self._rate_now.observe(snapshot.now, snapshot.arrivals, snapshot.interval)
        self.forecaster.observe(snapshot.now, snapshot.arrivals, snapshot.interval)
        self._persistence.observe(snapshot.now, snapshot.arrivals)
        self._forecast_persistence.observe(snapshot.now, snapshot.arrivals)
        if self._rate_long is not None:
            self._rate_long.observe(snapshot.now, snapshot.arrivals, snapshot.interval)
        self._service.extend(snapshot.service_times)
        self._startup.extend(snapshot.startup_times)
        if self._detector is not None:
            self._follow_period(snapshot)

        if self._last_decision_at is None:
            # A fresh policy (new daemon, restart) inherits the running count as its window peak:
            # scaling down needs a full window of evidence, never just the first tick.
            self._remember(snapshot.now, snapshot.current_replicas)
        self._last_decision_at = snapshot.now
        startup = self.startup_estimate
        horizon = startup + wl.tick_seconds
        window = cfg.scale_down_window_startups * startup + wl.tick_seconds
        self._watch_season(snapshot.now, horizon)
        inputs = SizingInputs(
            now=snapshot.now,
            waiting=snapshot.waiting,
            in_flight=snapshot.in_flight,
            current=snapshot.current_replicas,
            pods=snapshot.pods,
            rate_now=self._rate_now.rate,
            short_window_seconds=self._rate_now.window_seconds,
            forecast=self.forecaster.forecast(snapshot.now, horizon, self._z),
            service_time=self.service_estimate,
            service_cv2=self._service.cv2(),
            startup_time=startup,
            slots_per_pod=snapshot.slots_per_pod,
            slo_seconds=wl.slo_seconds,
            miss_probability=min(cfg.queue_miss_probability, 1.0 - cfg.confidence),
            drain_seconds=cfg.drain_seconds or wl.slo_seconds,
            min_replicas=wl.min_replicas,
            max_replicas=wl.max_replicas,
            window_peak=self._window_peak(snapshot.now, window),
            standing_pool=self._standing_pool(snapshot, startup, window),
            max_step_up=cfg.max_step_up,
            max_step_down=cfg.max_step_down,
            burst_persistence=self._persistence.ratio,
            rate_last_tick=snapshot.arrivals / snapshot.interval if snapshot.interval > 0 else 0.0,
            last_tick_seconds=snapshot.interval,
            long_rate=self._long_rate(),
            forecast_persistence=self._forecast_persistence.ratio,
            season_hold=self._season_hold(snapshot.now),
        )
        decision = size(inputs)
        if inputs.forecast.seasonal and inputs.forecast.seasonal_at_ready > 0:
            _push_peak(self._season_orders, snapshot.now + horizon, int(decision.terms["slo_pods"]))
        self._sized_rate = max(inputs.forecast.upper, inputs.rate_now)
        if decision.terms["burst"]:
            # Scored on what the readings credibly showed: their noise never was a burst's excess.
            credible = credible_burst_rate(inputs)
            self._persistence.project(snapshot.now, startup, credible, inputs.forecast.mean)
        if "forecast_floor" in decision.terms:
            # Scored as slo_demand discounts it: the seasonal part is not a spike's echo.
            floor = decision.terms["forecast_floor"]
            self._forecast_persistence.project(
                snapshot.now, horizon, inputs.forecast.mean_without_lift, floor
            )
        # The window holds what the SLO term asked for, not backlog-drain pods: those are wanted
        # only until the backlog is gone, and holding them would pay for a burst twice.
        self._remember(snapshot.now, int(decision.terms["slo_pods"]))
        if self._pool is not None:
            self._raw_history.append((snapshot.now, int(decision.terms["raw"])))
        else:
            # Only the pool reads it (and trims it): without one, a row a tick grew for good, and
            # with it the saved state and every surge answer's copy (a second a burst at 30 days).
            self._raw_history.clear()
        terms = dict(decision.terms)
        terms["horizon"] = horizon
        terms["scale_down_window"] = window
        if self.forecaster.seasonal is not None:
            terms["season_seconds"] = self.forecaster.seasonal.season_seconds
        return Decision(decision.desired, decision.reason, terms, decision.remove)

    def surge(self, snapshot: Snapshot) -> Decision | None:
        """Between ticks: on a burst, what the next tick would order, ordered now (or None).

        The loop's watch asks every ``watch_seconds`` while jobs wait (the contract is
        :class:`~autoscaler.engine.snapshot.SurgeResponder`; the tests, :mod:`autoscaler.engine.surge`).
        The answer is the tick's own rule applied to the interval so far, on a copy of the policy,
        so nothing read off a partial interval stays learned. A tick that has not happened yet in
        this process (nothing sized for) means no answer.
        """
        snapshot = bounded(snapshot)
        # Too short an interval has no rate to judge (see MIN_RATE_INTERVAL_SECONDS), and the next
        # tick's decision reads it as no data too.
        if snapshot.stale or self._sized_rate is None or snapshot.interval < MIN_RATE_INTERVAL_SECONDS:
            return None
        if not self.surge_possible(snapshot.waiting, snapshot.ready * snapshot.slots_per_pod):
            return None
        # A tick sized for (almost) no traffic cannot tell a rate from zero below one job per tick:
        # judged against zero, the first job after an idle spell was a surge, read as a rate of one
        # job per watch interval, and ordered ~30 pods that the next tick cancelled.
        floor = 1.0 / self.workload.tick_seconds
        surprise = poisson_tail(snapshot.arrivals, max(self._sized_rate, floor) * snapshot.interval)
        if surprise >= self.config.surge_significance:
            return None
        decision = copy.deepcopy(self).decide(snapshot)
        if decision.desired <= snapshot.current_replicas:
            return None
        terms = {**decision.terms, "surge_tail_probability": surprise, "surge_interval": snapshot.interval}
        return Decision(decision.desired, "surge", terms)

    def surge_possible(self, waiting: int, ready_slots: int) -> bool:
        """Whether :meth:`surge` could answer with this queue and these ready slots (see ``SurgeGate``).

        Its first two tests: a tick has sized for something, and the queue is already too long for
        the ready slots to start within the SLO (:func:`~autoscaler.engine.surge.late_already`).
        """
        waiting, ready_slots = min(waiting, MAX_COUNT), min(ready_slots, MAX_COUNT)  # see bounded()
        return self._sized_rate is not None and late_already(
            waiting, ready_slots, self.service_estimate, self.workload.slo_seconds
        )

    def _follow_period(self, snapshot: Snapshot) -> None:
        """Feed the period detector; when the period it finds changes, so does the season."""
        assert self._detector is not None
        self._detector.observe(snapshot.now, snapshot.arrivals, snapshot.interval)
        period = self._detector.period
        # The profile rounds a long season to whole buckets: compare lengths, not float bits.
        if not math.isclose(period or 0.0, self.season_seconds, abs_tol=1e-6):
            self.forecaster.set_season(period, snapshot.now, self._detector.history())

    def _watch_season(self, now: float, horizon: float) -> None:
        """When a seasonal profile starts predicting, put it on probation before the pool.

        A first fit, or a new season found, changes what reactive scaling does: the pods for a
        burst on the clock are ordered a warm-up ahead of it instead of after it. The standing
        pool's history was judged against the old forecaster, so the new one gets to show that
        it serves a whole season alone, starting when the pods it orders now are first ready
        (:meth:`~autoscaler.engine.standing_pool.StandingPool.prove`).
        """
        seasonal = self.forecaster.seasonal
        model = seasonal.season_seconds if seasonal is not None and seasonal.ready else 0.0
        changed = self._season_model is not None and model != self._season_model
        if changed and self._pool is not None:
            if model > 0:
                self._pool.prove(now + horizon, model)
            else:
                self._pool.cancel_probation()
        self._season_model = model

    def _long_rate(self) -> float | None:
        """The long-run rate once its window is covered; None before (no spike discount yet).

        Until then the "long run" is the first minutes, and scoring the forecast against them
        would learn from the start-up transient, not from bursts.
        """
        long = self._rate_long
        if long is None or long.covered_seconds < long.window_seconds - self.workload.tick_seconds:
            return None
        return long.rate

    def _window_peak(self, now: float, window: float) -> int | None:
        return _front_peak(self._recent, now - window)

    def _season_hold(self, now: float) -> int:
        """Pods sized for a seasonal lift whose predicted moment has not come yet: kept till then.

        The SLO term reads the profile where pods ordered *now* first serve, so once that point is
        past a predicted peak it asks for less, and the pods ordered for the peak, still warming
        up, would go a few seconds before it (with a standing pool, nothing else holds them). A
        burst on a loose clock, a little later than its profile, then met a cancelled order.
        """
        # Stamped with their pods' ready time: an order whose pods are ready by now is done.
        return _front_peak(self._season_orders, math.nextafter(now, math.inf)) or 0

    def _standing_pool(self, snapshot: Snapshot, lag: float, hold: float) -> int:
        if self._pool is None:
            return 0
        # Pods reactive scaling alone would have had ready now: the most it asked for between one
        # warm-up plus one scale-down window ago and one warm-up ago (ordered, ready, still held).
        # A pod serves one warm-up after its order; the horizon's extra tick is where the next
        # decision looks, not when pods serve. Counted a tick late, a burst's reactive pods
        # missed jobs in the replay that they served in fact (a third more after a 2-min flash
        # crowd), and the pool was kept for those misses.
        while self._raw_history and self._raw_history[0][0] < snapshot.now - lag - hold:
            self._raw_history.popleft()
        asked = max((r for t, r in self._raw_history if t <= snapshot.now - lag), default=0)
        self._pool.observe(snapshot.now, snapshot.arrivals, snapshot.interval, min(snapshot.ready, asked))
        service = self.service_estimate
        return self._pool.size(
            snapshot.now,
            snapshot.slots_per_pod,
            service,
            max(0.0, self.workload.slo_seconds - service),
            self.workload.max_replicas,
        )

    def _remember(self, now: float, raw: int) -> None:
        _push_peak(self._recent, now, min(max(raw, self.workload.min_replicas), self.workload.max_replicas))


def _push_peak(peaks: deque[tuple[float, int]], at: float, value: int) -> None:
    """Add ``value`` stamped ``at`` (stamps non-decreasing) to a deque whose front is its peak.

    Values no larger than a newer one can never be the peak again, so they go: the deque stays
    decreasing from the front, and the peak of what is kept costs O(1) amortised.
    """
    while peaks and peaks[-1][1] <= value:
        peaks.pop()
    peaks.append((at, value))


def _front_peak(peaks: deque[tuple[float, int]], since: float) -> int | None:
    """The peak of the values of a :func:`_push_peak` deque stamped ``since`` or later (None: none)."""
    while peaks and peaks[0][0] < since:
        peaks.popleft()
    return peaks[0][1] if peaks else None


def _detected_season(document: Mapping[str, Any]) -> float | None:
    """The period a saved policy had detected, if the document says so (else None)."""
    try:
        period = document["state"]["_detector"]["object"]["period"]
    except (KeyError, TypeError):
        return None
    return (
        float(period)
        if isinstance(period, int | float) and not isinstance(period, bool) and period > 0
        else None
    )
