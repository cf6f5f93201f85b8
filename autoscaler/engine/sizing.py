"""The decision itself: a pure function from estimates to a replica count with its explanation.

Nothing here keeps state or does I/O; :mod:`autoscaler.engine.policy` gathers the estimates and
the scale-down window, this module turns them into numbers. That split is what lets the property
tests drive the arithmetic directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    forecast: RateForecast
    service_time: float
    startup_time: float
    slots_per_pod: int
    slo_seconds: float
    miss_probability: float
    drain_seconds: float
    min_replicas: int
    max_replicas: int
    window_peak: int | None = None
    max_step_up: int | None = None
    max_step_down: int | None = None


def projected_backlog(inp: SizingInputs, demand_rate: float) -> float:
    """Jobs still queued when a pod ordered now would be ready (fluid model, never negative).

    Queue now, plus arrivals over the warm-up at ``demand_rate``, minus what the slots already
    there (ready now, or ready before that moment) will have finished by then; in-flight jobs keep
    their slots for about half a service time first.
    """
    horizon = inp.startup_time
    ready_at_horizon = inp.now + horizon
    slot_seconds = 0.0
    for pod in inp.pods:
        if pod.phase is PodPhase.READY:
            slot_seconds += horizon * inp.slots_per_pod
        elif pod.phase is PodPhase.STARTING:
            expected_ready = pod.created_at + inp.startup_time
            slot_seconds += max(0.0, ready_at_horizon - max(expected_ready, inp.now)) * inp.slots_per_pod
    served = max(0.0, slot_seconds - 0.5 * inp.in_flight * inp.service_time) / inp.service_time
    return max(0.0, inp.waiting + demand_rate * horizon - served)


def size(inp: SizingInputs) -> Decision:
    """Replicas needed at now + startup for the SLO, plus those to drain the projected backlog."""
    demand = max(inp.forecast.upper, inp.rate_now)
    max_wait = max(0.0, inp.slo_seconds - inp.service_time)
    slo_slots = slots_for_wait_slo(demand, inp.service_time, max_wait, inp.miss_probability)
    slo_pods = math.ceil(slo_slots / inp.slots_per_pod)
    backlog = projected_backlog(inp, max(inp.forecast.mean, min(inp.rate_now, demand)))
    backlog_pods = math.ceil(backlog * inp.service_time / (inp.slots_per_pod * inp.drain_seconds) - 1e-9)
    if inp.waiting > 0 and slo_pods + backlog_pods == 0:
        backlog_pods = 1  # queued work with no forecast demand still needs somewhere to run
    raw = slo_pods + backlog_pods
    reason = "backlog" if backlog_pods > slo_pods else "slo"
    desired = raw
    if desired < inp.current and inp.window_peak is not None and inp.window_peak > desired:
        desired, reason = min(inp.window_peak, inp.current), "scale-down-window"
    if inp.max_step_up is not None and desired > inp.current + inp.max_step_up:
        desired, reason = inp.current + inp.max_step_up, "step-limit"
    if inp.max_step_down is not None and desired < inp.current - inp.max_step_down:
        desired, reason = inp.current - inp.max_step_down, "step-limit"
    if desired < inp.current:
        removable = len(removal_order(inp.pods, inp.current - desired))
        if removable < inp.current - desired:
            desired, reason = inp.current - removable, "busy-pods"
    # The operator's bounds are hard limits and win over every softer rule above.
    if desired < inp.min_replicas:
        desired, reason = inp.min_replicas, "min-replicas"
    if desired > inp.max_replicas:
        desired, reason = inp.max_replicas, "max-replicas"
    remove = removal_order(inp.pods, inp.current - desired)

    terms = {
        "rate_now": inp.rate_now,
        "forecast_mean": inp.forecast.mean,
        "forecast_upper": inp.forecast.upper,
        "demand_rate": demand,
        "service_time": inp.service_time,
        "startup_time": inp.startup_time,
        "slo_pods": float(slo_pods),
        "backlog_jobs": backlog,
        "backlog_pods": float(backlog_pods),
        "raw": float(raw),
        "current": float(inp.current),
        "desired": float(desired),
    }
    return Decision(desired=desired, reason=reason, terms=terms, remove=remove)
