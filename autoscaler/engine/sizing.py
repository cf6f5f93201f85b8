"""The decision itself: a pure function from estimates to a replica count with its explanation.

Nothing here keeps state or does I/O; :mod:`autoscaler.engine.policy` gathers the estimates and
the scale-down window, this module turns them into numbers. That split is what lets the property
tests drive the arithmetic directly.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

from autoscaler.engine.forecast import RateForecast
from autoscaler.engine.queueing import slots_for_wait_slo
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, removal_order


@dataclass(frozen=True, slots=True)
class SizingInputs:
    """What one decision is computed from. Rates in jobs/s, times in seconds."""

    now: float
    waiting: int
    in_flight: int
    current: int
    pods: tuple[PodView, ...]
    rate_now: float
    short_window_seconds: float
    forecast: RateForecast
    service_time: float
    startup_time: float
    service_cv2: float
    slots_per_pod: int
    slo_seconds: float
    miss_probability: float
    drain_seconds: float
    min_replicas: int
    max_replicas: int
    window_peak: int | None = None
    standing_pool: int = 0
    max_step_up: int | None = None
    max_step_down: int | None = None
    burst_persistence: float = 1.0
    rate_last_tick: float = 0.0
    last_tick_seconds: float = 5.0  # what ``rate_last_tick`` was counted over, for its noise band
    long_rate: float | None = None
    forecast_persistence: float = 1.0
    season_hold: int = 0
    # Derived from ``pods`` once: several terms ask, and a pass over 200 pods per question was a
    # tenth of a decision's time.
    ready_pods: int = field(init=False, default=0)
    starting: tuple[PodView, ...] = field(init=False, default=())
    # The pods that serve or will: ``pods`` without the draining ones, which finish their job and
    # take no other. Counted as capacity over the horizon, five of them halved the pods a burst
    # got right after a scale-down or during a rollout (their slots are no capacity to plan on).
    active: tuple[PodView, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        ready, starting, draining = PodPhase.READY, PodPhase.STARTING, PodPhase.DRAINING
        object.__setattr__(self, "ready_pods", len([p for p in self.pods if p.phase is ready]))
        object.__setattr__(self, "starting", tuple([p for p in self.pods if p.phase is starting]))
        object.__setattr__(self, "active", tuple([p for p in self.pods if p.phase is not draining]))


# A starting pod this many startup estimates old is not coming soon: unschedulable, stuck pulling
# its image, or crash-looping before Ready. The estimate is the p90 of measured startups, so a
# healthy pod passes it one time in ten but twice it rarely. Counted as capacity due now, such a pod
# hid its share of the queue from the backlog projection for as long as it stayed stuck.
OVERDUE_STARTUPS = 2.0


def overdue(inp: SizingInputs, pod: PodView) -> bool:
    """Whether ``pod`` is still starting past :data:`OVERDUE_STARTUPS` startup estimates."""
    return pod.phase is PodPhase.STARTING and inp.now - pod.created_at > OVERDUE_STARTUPS * inp.startup_time


def overdue_pods(inp: SizingInputs) -> list[PodView]:
    """The pods :func:`overdue` holds for, in snapshot order; one pass, testing starting pods only
    (most pods serve: with 200 of them, a call per pod was a tenth of a decision's time)."""
    return [p for p in inp.starting if overdue(inp, p)]


def keep_order(inp: SizingInputs) -> list[PodView]:
    """Pods in the order they would be kept: ready, the oldest starting, overdue ones (never the
    draining: they are leaving).

    The inverse of :func:`removals` for capacity planning: shrinking to ``k`` pods keeps the first
    ``k`` of this list.
    """
    if not inp.starting:
        return list(inp.active)
    serving = [p for p in inp.active if p.phase is not PodPhase.STARTING]
    return serving + sorted(inp.starting, key=lambda p: (overdue(inp, p), p.created_at))


def removals(inp: SizingInputs, count: int) -> tuple[str, ...]:
    """Pods to let go, at most ``count``: overdue ones first, then :func:`removal_order`'s choice.

    Never a busy pod, overdue or not (one whose readiness probe fails while it serves a job reads
    as starting, and grows overdue)."""
    if count <= 0:
        return ()
    stuck = tuple(p.name for p in overdue_pods(inp) if not p.busy)
    rest = tuple(p for p in inp.pods if p.name not in stuck)
    return (stuck + removal_order(rest, count - len(stuck)))[:count]


def ready_time(inp: SizingInputs, pod: PodView) -> float:
    """When ``pod`` serves: now if it already does, else its creation plus the startup estimate.

    An overdue pod (see :data:`OVERDUE_STARTUPS`) is not expected within any horizon: infinity.
    """
    if pod.phase is not PodPhase.STARTING:  # first: most pods serve, and only starting ones are overdue
        return inp.now
    if overdue(inp, pod):
        return math.inf
    return max(inp.now, pod.created_at + inp.startup_time)


def projected_backlog(
    inp: SizingInputs, demand_rate: float, kept: list[PodView] | None = None, horizon: float | None = None
) -> float:
    """Jobs still queued ``horizon`` seconds from now (fluid model, never negative).

    Queue now, plus arrivals over the horizon at ``demand_rate``, minus what the ``kept`` pods
    (default: all but the draining) finish by then: ready ones serve the whole horizon, starting
    ones from their expected ready time. In-flight work is not subtracted: at a saturated steady state as
    much is in flight at the horizon as now, and counting it only once read that as backlog. The
    default horizon is one startup: when a pod ordered now would be ready.
    """
    ready = sorted(ready_time(inp, pod) for pod in (inp.active if kept is None else kept))
    horizon = inp.startup_time if horizon is None else horizon
    return _backlog(inp, demand_rate, _ReadyTimes(ready, inp.now).pod_seconds(len(ready), horizon), horizon)


class _ReadyTimes:
    """Non-decreasing ready times of pods, asked how many pod-seconds the first ``n`` give by a horizon.

    :func:`required_pods` asks that about nine times per decision, for up to 200 pods; a loop over
    the pods each time was the sizing's largest cost. Offsets from now and their prefix sums answer
    each question with one bisection (a serving pod's offset is exactly 0).
    """

    def __init__(self, ready: list[float], now: float) -> None:
        self.ready, self.now = ready, now
        serving = bisect_right(ready, now)  # offsets 0: their sums are 0 without adding them up
        self.offsets = [0.0] * serving + list(accumulate((at - now for at in ready[serving:]), initial=0.0))

    def pod_seconds(self, n: int, horizon: float) -> float:
        """Pod-seconds the first ``n`` pods serve between now and ``horizon`` seconds from now."""
        serving = bisect_left(self.ready, self.now + horizon, 0, n)  # ready before the horizon
        return max(0.0, serving * horizon - self.offsets[serving])


def _backlog(inp: SizingInputs, demand_rate: float, pod_seconds: float, horizon: float) -> float:
    """Jobs queued ``horizon`` seconds from now when pods serve ``pod_seconds`` until then."""
    served = pod_seconds * inp.slots_per_pod / inp.service_time
    return max(0.0, inp.waiting + demand_rate * horizon - served)


def pool_for_backlog(inp: SizingInputs, slo_pods: int, backlog: float) -> int:
    """Pods needed when ``backlog`` jobs are queued at the moment new pods become ready.

    Two conditions, both FIFO facts: the first job to arrive then waits for the whole backlog to
    be started, so the pool must start it within the wait budget (SLO minus service time); and
    the queue must keep shrinking, so on top of the SLO term the pool drains it within
    ``drain_seconds``. Small backlogs (Poisson wiggles) barely move the first condition; a flash
    crowd's backlog is dominated by it.
    """
    per_job = inp.service_time / inp.slots_per_pod
    budget = max(inp.slo_seconds - inp.service_time, inp.service_time * 0.1)
    # Never more than a slot per queued job: those start them all at once. The fluid counts ask
    # for more only when a job is longer than the time given (60 s jobs, 1 s to spare: 10 queued
    # jobs asked for 100 pods, where 10 start every one of them now).
    every_job = math.ceil(backlog / inp.slots_per_pod - 1e-9)
    catch_up = min(math.ceil(backlog * per_job / budget - 1e-9), every_job)
    drain = slo_pods + min(math.ceil(backlog * per_job / inp.drain_seconds - 1e-9), every_job)
    return max(catch_up, drain)


def required_pods(inp: SizingInputs, slo_pods: int, backlog_rate: float) -> tuple[int, float]:
    """Smallest pool that meets the SLO term and drains the backlog the pool itself leaves.

    If the current pool leaves more backlog at the horizon (when pods ordered now are ready) than
    it can work off, order what it asks for. Otherwise look for pods to let go, youngest first,
    and test each cut at the moment it matters: keeping the first ``n`` pods must handle the
    backlog at the horizon, and, if the first pod cut is still starting, the backlog at its ready
    time too. A pod ordered for a burst is needed when it comes up behind a queue, however well
    the queue looks drained thirty seconds later; testing the horizon alone cancelled such pods
    a tick at a time, paying part of their startup for nothing and leaving the queue to the FIFO.
    """
    kept = keep_order(inp)
    # Non-decreasing: serving (most pods, every tick: ready now), oldest starting, overdue.
    serving = len(kept) - len(inp.starting)
    ready = [inp.now] * serving + [ready_time(inp, pod) for pod in kept[serving:]]
    current, horizon = len(kept), inp.startup_time
    times = _ReadyTimes(ready, inp.now)
    backlog_now = _backlog(inp, backlog_rate, times.pod_seconds(current, horizon), horizon)
    need_now = pool_for_backlog(inp, slo_pods, backlog_now)
    if need_now > current:
        return need_now, backlog_now

    def backlog_if_cut(n: int) -> float:
        """The backlog that decides whether keeping only ``kept[:n]`` is enough (or +inf)."""
        if n < current and kept[n].phase is PodPhase.STARTING and math.isfinite(ready[n]):
            lead = ready[n] - inp.now
            at_ready = _backlog(inp, backlog_rate, times.pod_seconds(n, lead), lead)
            if n < pool_for_backlog(inp, slo_pods, at_ready):
                return math.inf
        return _backlog(inp, backlog_rate, times.pod_seconds(n, horizon), horizon)

    def enough(n: int) -> bool:
        backlog = backlog_if_cut(n)
        return backlog != math.inf and n >= pool_for_backlog(inp, slo_pods, backlog)

    # Pods with one ready time form a group; whole groups go while they can, then the smallest
    # pool inside the first group that must stay (within a group the test is monotone in n).
    hi = current
    while hi > 0:
        lo = hi - 1
        while lo > 0 and ready[lo - 1] == ready[hi - 1]:
            lo -= 1
        if not enough(lo):
            break
        hi = lo
    else:
        lo = 0
    while lo < hi:  # invariant: enough(hi)
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi, backlog_if_cut(hi) if hi < current else backlog_now


def is_burst(inp: SizingInputs) -> bool:
    """Whether "now" is clearly more than the forecast: a flash crowd begun, or a queue building.

    The short-window rate is noisy; taking it whenever it exceeds the forecast would order pods on
    every Poisson wiggle. Once it exceeds the forecast by more than two standard errors of a
    Poisson count, the smoothed forecast is the one lagging.
    """
    return inp.rate_now > inp.forecast.mean + wiggle_band(inp) or queue_building(inp)


def wiggle_band(inp: SizingInputs) -> float:
    """Two standard errors of the short-window rate, as a Poisson count read at its own level."""
    return poisson_band(inp.rate_now, inp.short_window_seconds)


def poisson_band(rate: float, window: float) -> float:
    """Two standard errors of a rate read off a Poisson count over ``window`` seconds."""
    return 2.0 * math.sqrt(max(rate, 1.0 / window) / window)


def forecast_excess_floor(inp: SizingInputs) -> float:
    """The rate above which the forecast counts as a burst's excess: the long-run rate plus noise.

    The band is that of a short-window reading at the long-run level, so Poisson wiggles and
    the steady part of a ramp stay below it and are always sized for in full.
    """
    long_rate = inp.long_rate or 0.0
    return long_rate + poisson_band(long_rate, inp.short_window_seconds)


def slo_demand(inp: SizingInputs) -> float:
    """The arrival rate the SLO term sizes for: the forecast's upper quantile, a spike discounted.

    The forecast follows a spike within a tick or two and still reads high once it is over;
    pods ordered on that come up a warm-up later to an empty queue. Its excess above the long-run
    rate counts only in the proportion such excesses really lasted a horizon before
    (``forecast_persistence``). The demand never falls when the forecast rises: the discount
    grows at most as fast as the mean, and the upper quantile at least as fast.

    A seasonal profile's part is a prediction, not the echo of a spike, so it is never discounted;
    and it is read where the pods ordered now first serve (``seasonal_at_ready``), not averaged
    over the horizon, so a daily or cron-like peak has its pods ready when it begins.
    """
    season_ahead = inp.forecast.seasonal_at_ready - inp.forecast.seasonal_offset
    if inp.long_rate is None:
        return inp.forecast.upper + season_ahead
    return inp.forecast.upper - (1.0 - inp.forecast_persistence) * forecast_excess(inp) + season_ahead


def forecast_excess(inp: SizingInputs) -> float:
    """How far the forecast, less a seasonal lift, stands above the long-run rate and its noise.

    A seasonal lift (a positive offset) is predicted, so it is no excess. A seasonal dip is not
    added back: the long-run rate is read off raw arrivals, which already show the dip.
    """
    return max(0.0, inp.forecast.mean_without_lift - forecast_excess_floor(inp))


def queue_building(inp: SizingInputs) -> bool:
    return inp.waiting > inp.ready_pods * inp.slots_per_pod


def backlog_rate(inp: SizingInputs) -> float:
    """Arrival rate to project the backlog with: the forecast, plus a burst's lasting excess.

    In a burst the short-window rate is the better estimate of what arrives during the warm-up,
    discounted by how much of past bursts' excess really lasted a horizon (``burst_persistence``).
    Only the excess beyond the readings' Poisson noise counts (:func:`credible_burst_rate`), unless
    a queue is already building; the bands are read at the observed rates, not at the forecast, so
    the projection never falls when the forecast rises (a forecast just high enough to hide a burst
    must not order fewer pods).

    The forecast itself is discounted as the SLO term discounts it (:func:`slo_demand`): a spike
    lifts the smoothed mean within a tick or two, and projecting the warm-up's arrivals at that
    mean ordered, for every short burst, pods that came up to an empty queue or were cut while
    starting (on the Azure code trace, 3.6 % of all pod-seconds for 0.1 point of attainment).
    The discounted part is not lost when the burst does last: the rate now stands above the
    discounted mean, and ``burst_persistence`` of that excess counts.
    """
    mean = inp.forecast.mean
    if inp.long_rate is not None:
        mean -= (1.0 - inp.forecast_persistence) * forecast_excess(inp)
    return mean + inp.burst_persistence * max(0.0, credible_burst_rate(inp) - mean)


def burst_rate(inp: SizingInputs) -> float:
    """The rate a detected burst runs at now: the short window or the newest tick, the higher.

    At the onset of a burst the short window still averages in the quiet before it (traffic
    that starts mid-window reads at half its rate), and pods ordered on that estimate come up
    behind a queue they cannot start within the wait budget. The newest tick is the rate the
    burst has reached; the window wins once it is past its peak.
    """
    return max(inp.rate_now, inp.rate_last_tick)


def credible_burst_rate(inp: SizingInputs) -> float:
    """:func:`burst_rate` less each reading's own Poisson noise, unless a queue is building.

    The short window is read less its wiggle band, the newest tick less the band of a count over
    that tick. A tick's count is noisier the shorter the tick, and discounting it by the short
    window's band took, at a 1 s tick, the second with 11 arrivals that steady 5 jobs/s gives
    every minute or so for a burst: it ordered pods and cancelled them the next second (2,113
    pods created in an hour, against 337 now and 262 at a 5 s tick). A queue already building
    is evidence enough, and counts both readings in full.
    """
    if queue_building(inp):
        return burst_rate(inp)
    newest = inp.rate_last_tick
    if inp.last_tick_seconds > 0:
        newest -= poisson_band(newest, inp.last_tick_seconds)
    return max(inp.rate_now - wiggle_band(inp), newest)


def pods_for_rate(inp: SizingInputs, rate: float, max_wait: float, most: int) -> int:
    """Pods the SLO term asks for at ``rate`` (jobs/s): the queueing model's slots, in whole pods."""
    slots = slots_for_wait_slo(
        rate, inp.service_time, max_wait, inp.miss_probability, inp.service_cv2, limit=most
    )
    return math.ceil(slots / inp.slots_per_pod)


def size(inp: SizingInputs) -> Decision:
    """Replicas needed at now + startup for the SLO, plus those to drain the projected backlog."""
    demand = slo_demand(inp)
    max_wait = max(0.0, inp.slo_seconds - inp.service_time)
    # Beyond one pod more than the maximum and the pods there are, the answer no longer changes
    # the decision: a need above the maximum is clipped to it, whatever it is exactly, and the
    # standing pool compares it with the ready pods only. The current count is not one of the
    # bounds: a Deployment's spec says whatever was written to it (2**31 - 1 by a typo), and as
    # one it made the search walk that many sizes, minutes of one tick, for the same decision.
    most = (max(inp.max_replicas, len(inp.pods)) + 1) * inp.slots_per_pod
    slo_pods = pods_for_rate(inp, demand, max_wait, most)
    burst = is_burst(inp)
    raw, backlog = required_pods(inp, slo_pods, backlog_rate(inp))
    if inp.waiting > 0 and raw == 0:
        raw = 1  # queued work with no forecast demand still needs somewhere to run
    backlog_pods = raw - slo_pods
    reason = "backlog" if backlog_pods > slo_pods else "slo"
    desired = raw
    # The window guards against releasing pods needed again within a warm-up. Once a standing pool
    # covers the need, the pool is that guard: pods above it were ordered for a burst and go. Not
    # the pods the usual traffic needs, though: on smooth traffic the pool is a few pods, and a
    # lull shorter than a warm-up (the need falling to the pool for a minute) released the whole
    # pool, whose replacements then came a warm-up late (at a 120 s warm-up, 2 jobs/s with a
    # 60 s lull: 263 of the 389 jobs after it late).
    if desired < inp.current and inp.window_peak is not None and inp.window_peak > desired:
        held = inp.standing_pool == 0 or raw > inp.standing_pool
        keep = min(inp.window_peak, inp.current)
        if not held:  # down to the usual traffic's pods (none until the long-run rate is known)
            usual = 0 if inp.long_rate is None else pods_for_rate(inp, inp.long_rate, max_wait, most)
            keep = min(keep, usual)
        if keep > desired:
            desired, reason = keep, "scale-down-window"
    if inp.standing_pool > desired:
        desired, reason = inp.standing_pool, "standing-pool"
    # Pods ordered for a predicted seasonal peak stay until its moment, pool or not (it never adds).
    if desired < min(inp.season_hold, inp.current):
        desired, reason = min(inp.season_hold, inp.current), "season-hold"
    if inp.max_step_up is not None and desired > inp.current + inp.max_step_up:
        desired, reason = inp.current + inp.max_step_up, "step-limit"
    if inp.max_step_down is not None and desired < inp.current - inp.max_step_down:
        desired, reason = inp.current - inp.max_step_down, "step-limit"
    # Replicas with no pod behind them (not created yet, refused by a quota) go first, and at once:
    # dropping them removes nothing. Only the pods beyond ``desired`` are to be picked.
    podless = max(0, inp.current - len(inp.active))
    remove: tuple[str, ...] = ()
    if desired < inp.current - podless:
        remove = removals(inp, inp.current - podless - desired)
        if len(remove) < inp.current - podless - desired:
            desired, reason = inp.current - podless - len(remove), "busy-pods"
    # The operator's bounds are hard limits and win over every softer rule above.
    if desired < inp.min_replicas:
        desired, reason = inp.min_replicas, "min-replicas"
    if desired > inp.max_replicas:
        desired, reason = inp.max_replicas, "max-replicas"
    # removals() of fewer pods is a prefix of its answer for more: reuse it unless the cap cut deeper.
    cut = inp.current - podless - desired
    remove = remove[: max(cut, 0)] if cut <= len(remove) else removals(inp, cut)

    terms = {
        "rate_now": inp.rate_now,
        "forecast_mean": inp.forecast.mean,
        "forecast_upper": inp.forecast.upper,
        "forecast_steady": float(inp.forecast.steady),
        "demand_rate": demand,
        "service_time": inp.service_time,
        "startup_time": inp.startup_time,
        "slo_pods": float(slo_pods),
        "backlog_jobs": backlog,
        "backlog_pods": float(backlog_pods),
        "raw": float(raw),
        "standing_pool": float(inp.standing_pool),
        "season_hold": float(inp.season_hold),
        "current": float(inp.current),
        "overdue_pods": float(len(overdue_pods(inp))),
        "desired": float(desired),
        "burst": float(burst),
        "burst_persistence": inp.burst_persistence,
        "forecast_persistence": inp.forecast_persistence,
    }
    if inp.long_rate is not None:
        terms["long_rate"] = inp.long_rate
        terms["forecast_floor"] = forecast_excess_floor(inp)
    return Decision(desired=desired, reason=reason, terms=terms, remove=remove)
