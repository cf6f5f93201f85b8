"""When a burst cannot wait for the next tick: the two tests the watch's readings must pass.

A tick every few seconds is plenty for traffic that changes over minutes, but a burst of hundreds
of jobs a second that begins just after a tick has its pods ordered up to a tick late, and each of
those seconds of warm-up is a second of the burst's arrivals served late. The loop therefore reads
the queue between ticks (cheap: one Redis round trip) and lets the policy answer at once. Steady
traffic must never get an answer between ticks, though, or every Poisson wiggle would order pods
the next tick cancels. Both tests below have to say "surge":

* :func:`late_already`: more jobs wait than the ready slots can start within the wait budget,
  so some of the queue is late whatever happens next; and
* :func:`poisson_tail`: the arrivals since the tick are implausible at the rate the tick sized
  for (the policy compares the tail probability with its ``surge_significance``).
"""

from __future__ import annotations


def late_already(waiting: int, ready_slots: int, service_time: float, slo_seconds: float) -> bool:
    """Whether more jobs wait than ``ready_slots`` can start within the SLO's wait budget.

    Each slot starts about one job per service time, so within the budget (SLO minus service time)
    the ready slots start ``ready_slots * budget / service_time`` of the queue; beyond that, jobs
    wait past the SLO unless capacity already starting comes up first.
    """
    budget = max(slo_seconds - service_time, 0.0)
    return waiting > ready_slots * budget / service_time


def poisson_tail(count: int, mean: float) -> float:
    """P(N >= ``count``) for N Poisson with ``mean``: how surprising ``count`` arrivals are."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    from scipy.special import pdtrc  # scipy comes with statsmodels; imported on first surge only

    return float(pdtrc(count - 1, mean))
