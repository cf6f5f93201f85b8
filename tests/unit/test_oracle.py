"""The zero-wait oracle against hand-worked cases and a brute-force per-level recomputation."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.oracle import (
    cheapest_schedule,
    first_look,
    oracle_pod_seconds,
    warmup_bound,
    zero_wait_profile,
)
from experiments.traces import AZURE_CODE_TRACE, load_trace

AZURE = AZURE_CODE_TRACE


def brute_force(arrivals: list[float], service: list[float], slots: int, startup: float) -> float:
    """Level by level with plain loops: an independent reading of the oracle's definition."""
    instants = sorted({*arrivals, *(a + s for a, s in zip(arrivals, service, strict=True))})

    def pods_on(lo: float) -> int:  # pods needed on [lo, next instant)
        running = sum(1 for a, s in zip(arrivals, service, strict=True) if a <= lo < a + s)
        return math.ceil(running / slots)

    needed = [pods_on(t) for t in instants[:-1]]
    total = 0.0
    for level in range(1, max(needed, default=0) + 1):
        on = [needed[i] >= level for i in range(len(needed))]
        last_off: float | None = None
        was_on = False
        for i, is_on in enumerate(on):
            t0, t1 = instants[i], instants[i + 1]
            if is_on:
                if not was_on:
                    total += startup if last_off is None else min(t0 - last_off, startup)
                total += t1 - t0
            elif was_on:
                last_off = t0
            was_on = is_on
    return total


def test_single_job_pays_startup_plus_service() -> None:
    assert oracle_pod_seconds(np.array([0.0]), np.array([5.0]), 1, 30.0) == 35.0


def test_a_job_of_length_zero_still_needs_a_ready_pod() -> None:
    """Counted as ending as it began, it needed no pod: a trace of such jobs had an oracle of 0
    pod-seconds, and every cost ratio was NaN."""
    assert oracle_pod_seconds(np.array([0.0]), np.array([0.0]), 1, 30.0) == pytest.approx(30.0)
    assert oracle_pod_seconds(np.array([0.0, 100.0]), np.array([0.0, 0.0]), 1, 30.0) == pytest.approx(60.0)


def test_short_gap_is_bridged_long_gap_restarts() -> None:
    arrivals, service = np.array([0.0, 10.0]), np.array([5.0, 5.0])
    assert oracle_pod_seconds(arrivals, service, 1, 30.0) == 30 + 5 + 5 + 5  # idles 5 s
    assert oracle_pod_seconds(arrivals, service, 1, 2.0) == 2 + 5 + 2 + 5  # exits, restarts


def test_back_to_back_jobs_need_no_second_pod() -> None:
    arrivals, service = np.array([0.0, 5.0]), np.array([5.0, 5.0])
    assert zero_wait_profile(arrivals, service, 1).pods.max() == 1
    assert oracle_pod_seconds(arrivals, service, 1, 30.0) == 40.0


def test_slots_share_a_pod() -> None:
    arrivals, service = np.array([0.0, 0.0, 0.0]), np.array([4.0, 4.0, 4.0])
    assert oracle_pod_seconds(arrivals, service, 2, 10.0) == 2 * (10 + 4)
    assert oracle_pod_seconds(arrivals, service, 3, 10.0) == 10 + 4


def test_azure_trace_oracle_is_within_bounds_and_the_recorded_reference() -> None:
    trace = load_trace(AZURE)
    service = np.full(len(trace), 5.0)
    cost = oracle_pod_seconds(trace.arrivals, service, 1, 30.0)
    peak = int(zero_wait_profile(trace.arrivals, service, 1).pods.max())
    assert service.sum() < cost < peak * (trace.span + 5 + 30)
    # The cost every ratio in the README and reports/ divides by (reports/scorecard.md).
    assert cost == pytest.approx(143_982, abs=1.0)


jobs = st.lists(
    st.tuples(st.integers(0, 40).map(lambda x: x / 2), st.integers(1, 20).map(lambda x: x / 2)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(jobs=jobs, slots=st.integers(1, 3), startup=st.sampled_from([0.0, 1.0, 3.5, 30.0]))
def test_matches_brute_force_and_bounds(jobs: list[tuple[float, float]], slots: int, startup: float) -> None:
    jobs.sort()
    arrivals = np.array([a for a, _ in jobs])
    service = np.array([s for _, s in jobs])
    cost = oracle_pod_seconds(arrivals, service, slots, startup)
    assert cost == pytest.approx(brute_force(arrivals.tolist(), service.tolist(), slots, startup))
    # Never below the work itself, never above a static pool of the peak for the whole span.
    peak = int(zero_wait_profile(arrivals, service, slots).pods.max())
    end = float(np.max(arrivals + service))
    assert service.sum() / slots <= cost + 1e-9
    assert cost <= peak * (end - arrivals[0] + startup) + 1e-9


@settings(max_examples=200, deadline=None)
@given(jobs=jobs, startup=st.sampled_from([0.0, 1.0, 3.5, 30.0]))
def test_the_level_stacking_is_the_cheapest_assignment_of_jobs_to_pods(
    jobs: list[tuple[float, float]], startup: float
) -> None:
    """The oracle stacks the zero-wait profile in levels. That is a reading of the definition, not
    a schedule: here the cheapest schedule of real pods, each job on one pod from start to end,
    costs exactly as much (one slot per pod). On the Azure code trace the same matching over all
    8,819 jobs gives the oracle's 143,982 pod-seconds to the unit (benchmarks/RESULTS.md, session
    42; ``benchmarks/oracle_matching.py``), so an oracle ~15 % cheaper (the independent
    reference's implied figure) is a different definition, not a better schedule."""
    jobs.sort()
    arrivals = np.array([a for a, _ in jobs])
    service = np.array([s for _, s in jobs])
    expected = cheapest_schedule(arrivals, service, startup)
    assert oracle_pod_seconds(arrivals, service, 1, startup) == pytest.approx(expected)


def test_the_first_look_follows_the_watch_restarting_at_each_tick() -> None:
    assert [first_look(t, 2.0, 5.0) for t in (0.0, 0.5, 4.5, 5.0, 5.1, 9.5)] == [
        0.0,
        2.0,
        5.0,
        5.0,
        7.0,
        10.0,
    ]
    assert [first_look(t, 1.0, 5.0) for t in (0.0, 0.3, 4.5)] == [0.0, 1.0, 5.0]
    assert [first_look(t, 5.0) for t in (0.0, 0.1, 5.0, 7.5)] == [0.0, 5.0, 5.0, 10.0]


def test_warmup_bound_worked_example() -> None:
    # One job a second from t=0, one warm pod, 5 s jobs, 30 s startup, SLO 10 s. The warm pod
    # serves jobs 0 and 1 in time (job 2 would start at 10). Pods ordered at the first tick are
    # ready at 30, in time for jobs that arrived from t=25 on; everything between is late.
    arrivals, service = np.arange(60.0), np.full(60, 5.0)
    bound = partial(warmup_bound, arrivals, service, slots=1, startup=30.0, look_seconds=5.0, slo=10.0)
    assert bound(initial_pods=1) == pytest.approx((2 + 35) / 60)
    assert bound(initial_pods=60) == 1.0
    # A cap on pods is a cap on the catch-up: at most 60 pods start the 25 queued jobs at t=30
    # as unlimited pods would; 3 pods serve 0.6 jobs/s against 1 arriving, so after the warm
    # pod's two jobs none is ever in time again; with no pod beyond the warm one, the same.
    assert bound(initial_pods=1, max_pods=60) == pytest.approx((2 + 35) / 60)
    assert bound(initial_pods=1, max_pods=3) == pytest.approx(2 / 60)
    assert bound(initial_pods=1, max_pods=1) == pytest.approx(2 / 60)
    assert bound(initial_pods=0, max_pods=0) == 0.0
    # Pods at the first look after the 6th job (t=5, a look at 5): ready at 35, in time from t=30.
    assert bound(initial_pods=1, evidence_jobs=6) == pytest.approx((2 + 30) / 60)
    assert bound(initial_pods=1, evidence_jobs=1) == bound(initial_pods=1)
    assert bound(initial_pods=1, evidence_jobs=600) == bound(initial_pods=1, evidence_jobs=60)  # the last
