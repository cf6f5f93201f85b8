"""The shared back-off formula, and the retry loops built on it, through outages of any length."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.loop import Backoff
from jobqueue.backoff import backoff_delay, backoff_step

attempts = st.integers(min_value=0, max_value=10**6)
bases = st.floats(min_value=1e-3, max_value=10.0)
caps = st.floats(min_value=1e-3, max_value=3600.0)


@settings(max_examples=300, deadline=None)
@given(attempts, bases, caps)
def test_the_step_doubles_up_to_the_cap_and_never_overflows(attempt: int, base: float, cap: float) -> None:
    step = backoff_step(attempt, base, cap)
    assert step == min(cap, base * 2.0 ** min(attempt, 60))
    assert backoff_step(attempt + 1, base, cap) >= step


@settings(max_examples=300, deadline=None)
@given(attempts, bases, caps, st.integers(min_value=0, max_value=2**32 - 1))
def test_jitter_stays_within_its_range(attempt: int, base: float, cap: float, seed: int) -> None:
    step = backoff_step(attempt, base, cap)
    equal = backoff_delay(attempt, base, cap, random.Random(seed))
    full = backoff_delay(attempt, base, cap, random.Random(seed), jitter="full")
    assert step / 2 <= equal <= step
    assert 0.0 <= full <= step


def test_jitter_spreads_the_pauses() -> None:
    rng = random.Random(7)
    pauses = [backoff_delay(3, 0.5, 60.0, rng) for _ in range(200)]  # step 4 s
    assert min(pauses) < 2.2 and max(pauses) > 3.8


def test_the_loop_backs_off_through_an_outage_of_any_length() -> None:
    # One failure a minute for a day and more: 2**1024 does not fit a float, and the loop's thread
    # used to die of the OverflowError raised while backing off at the 1,025th failure in a row.
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert all(30.0 <= d <= 60.0 for d in delays[10:])
    backoff.reset()
    assert backoff.next_delay() <= 1.0
