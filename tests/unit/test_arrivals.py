"""Arrivals between two reads of the queue (autoscaler.arrivals): pure counting, no I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from autoscaler.arrivals import arrivals_between
from autoscaler.sources.base import QueueSignals


def read(total: int | None, waiting: int = 0, in_flight: int = 0, completions: int = 0) -> QueueSignals:
    return QueueSignals(
        observed_at=0.0, waiting=waiting, in_flight=in_flight, arrivals_total=total, completions=completions
    )


def test_a_counter_is_differenced() -> None:
    assert arrivals_between(read(100), read(130, waiting=50)) == 30


def test_a_counter_that_just_appeared_counts_nothing_yet() -> None:
    assert arrivals_between(read(None, waiting=3), read(1_000, waiting=40)) == 0


def test_a_counter_reset_to_zero_counts_the_jobs_since_when_they_are_visible() -> None:
    # Redis lost its data and four jobs arrived since: all four are still in sight.
    assert arrivals_between(read(500, waiting=10), read(4, waiting=3, completions=1)) == 4


def test_a_counter_restored_from_an_older_copy_is_not_believed() -> None:
    # An old snapshot's value, far more than is visible: estimated from the queue's growth instead.
    previous, current = read(200_000, waiting=5), read(100_000, waiting=8, in_flight=2, completions=1)
    assert arrivals_between(previous, current) == (8 + 2 - 5) + 1


def test_a_counter_below_zero_is_estimated_from_the_queue() -> None:
    assert arrivals_between(read(10, waiting=2), read(-3, waiting=6)) == 4


def test_without_a_counter_arrivals_are_the_queue_growth_plus_completions() -> None:
    assert arrivals_between(read(None, waiting=10, in_flight=4), read(None, waiting=12, completions=3)) == 1
    # The queue shrank by more than was completed: the estimate stops at zero.
    assert arrivals_between(read(None, waiting=10), read(None, waiting=2, completions=3)) == 0


counts = st.integers(min_value=0, max_value=10_000)
totals = st.one_of(st.none(), st.integers(min_value=-1_000, max_value=10**9))


reads = st.builds(read, totals, counts, counts, counts)


@given(reads, reads)
def test_arrivals_are_never_negative(previous: QueueSignals, current: QueueSignals) -> None:
    """Whatever the counter and the queue do, no interval un-arrives jobs."""
    assert arrivals_between(previous, current) >= 0
