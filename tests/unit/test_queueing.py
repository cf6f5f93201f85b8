"""Erlang-C arithmetic against textbook values and brute-force search."""

import math

import pytest

from autoscaler.engine.queueing import erlang_c, slots_for_wait_slo, wait_exceedance


def erlang_c_closed_form(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    bottom = sum(a**k / math.factorial(k) for k in range(c)) + top
    return top / bottom


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (5, 3.7), (10, 8.0), (30, 25.0)])
def test_erlang_c_matches_closed_form(c: int, a: float) -> None:
    assert erlang_c(c, a) == pytest.approx(erlang_c_closed_form(c, a), rel=1e-9)


def test_erlang_c_single_server_is_utilisation() -> None:
    # M/M/1: probability of waiting equals rho.
    assert erlang_c(1, 0.3) == pytest.approx(0.3)


def test_unstable_or_idle_edges() -> None:
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(3, 0.0) == 0.0
    assert wait_exceedance(2, 1.0, 5.0, 100.0) == 1.0  # load 5 on 2 slots


def test_slots_for_wait_slo_is_the_smallest_sufficient_size() -> None:
    for rate, service, wait, miss in [(10, 5, 5, 0.05), (0.3, 5, 5, 0.01), (40, 5, 0, 0.1), (2, 1, 3, 0.001)]:
        n = slots_for_wait_slo(rate, service, wait, miss)
        assert wait_exceedance(n, rate, service, wait) <= miss
        assert n - 1 <= rate * service or wait_exceedance(n - 1, rate, service, wait) > miss


def test_deterministic_service_needs_fewer_slots_and_the_size_stays_minimal() -> None:
    for rate, service, wait, miss in [(10, 5, 5, 0.05), (40, 5, 5, 0.01), (2, 1, 3, 0.001)]:
        n = slots_for_wait_slo(rate, service, wait, miss, service_cv2=0.0)
        assert n <= slots_for_wait_slo(rate, service, wait, miss)
        assert wait_exceedance(n, rate, service, wait, service_cv2=0.0) <= miss
        assert n - 1 <= rate * service or wait_exceedance(n - 1, rate, service, wait, service_cv2=0.0) > miss


def test_no_demand_needs_no_slots() -> None:
    assert slots_for_wait_slo(0.0, 5.0, 5.0, 0.05) == 0
