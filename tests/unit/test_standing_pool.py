"""The fluid what-if replay behind the learned standing pool."""

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.engine.standing_pool import StandingPool, _Columns, fluid_attainment, smallest_enough
from autoscaler.engine.state import dump, load

BURST = [(0.0, 5.0, 0.0), (0.0, 5.0, 0.0), (200.0, 5.0, 0.0), (0.0, 5.0, 0.0), (0.0, 5.0, 0.0)]


def test_enough_capacity_meets_every_job() -> None:
    ticks = [(10.0, 5.0, 0.0)] * 20  # 2 jobs/s, 10 Erlangs at 5 s service
    assert fluid_attainment(ticks, pods=11, slots=1, service=5.0, max_wait=0.0) == 1.0


def test_burst_share_met_matches_hand_computation() -> None:
    # 100 jobs in one 5 s tick, 10 pods at 5 s/job = 2 jobs/s; a job may wait 5 s = 10 jobs ahead.
    # Queue seen at fraction u: u * (100 - 10) = 90u <= 10  ->  u <= 1/9.
    share = fluid_attainment([(100.0, 5.0, 0.0)], pods=10, slots=1, service=5.0, max_wait=5.0)
    assert share == pytest.approx(1 / 9)


def test_reactive_capacity_counts_alongside_the_floor() -> None:
    # The same burst, but reactive scaling had 10 pods ready: no floor is needed for it.
    assert fluid_attainment(
        [(100.0, 5.0, 10.0)], pods=0, slots=1, service=5.0, max_wait=5.0
    ) == pytest.approx(1 / 9)
    # A floor above the reactive capacity is what serves.
    assert fluid_attainment([(100.0, 5.0, 10.0)], pods=100, slots=1, service=5.0, max_wait=5.0) == 1.0


def test_draining_queue_lets_later_jobs_meet_the_bound() -> None:
    ticks = [(100.0, 5.0, 0.0)] + [(1.0, 5.0, 0.0)] * 10
    met_quiet = fluid_attainment(ticks, 10, 1, 5.0, 5.0) * 110 - 100 / 9
    assert 0 < met_quiet < 10


def test_a_job_that_finds_a_free_slot_waits_for_nothing() -> None:
    # 60 s jobs with 1 s to spare, three at once every 15 s (0.2 job/s, 12 Erlangs) on 14 pods:
    # the fluid queue alone made them wait for each other's work, as if one server ran them.
    ticks = [(3.0, 5.0, 0.0), (0.0, 5.0, 0.0), (0.0, 5.0, 0.0)] * 4
    assert fluid_attainment(ticks, pods=14, slots=1, service=60.0, max_wait=1.0) == 1.0
    assert fluid_attainment(ticks, pods=4, slots=1, service=60.0, max_wait=1.0) < 0.5  # overloaded
    # Where the budget covers a job (the reference: 5 s jobs, 5 s to spare), the fluid count stands.
    assert fluid_attainment([(100.0, 5.0, 0.0)], 10, 1, 5.0, 5.0) == pytest.approx(1 / 9)


def test_no_pods_or_no_jobs() -> None:
    assert fluid_attainment([], 0, 1, 5.0, 5.0) == 1.0
    assert fluid_attainment([(5.0, 5.0, 0.0)], 0, 1, 5.0, 5.0) == 0.0


def test_learned_size_is_the_smallest_sufficient_and_forgets_old_traffic() -> None:
    pool = StandingPool(window_seconds=60.0, target=0.9, refresh_seconds=0.0)
    now = 0.0
    for arrivals, _, _ in BURST:
        now += 5.0
        pool.observe(now, int(arrivals), 5.0, 0)
    size = pool.size(now, slots=1, service=5.0, max_wait=5.0, limit=500)
    assert fluid_attainment(BURST, size, 1, 5.0, 5.0) >= 0.9
    assert fluid_attainment(BURST, size - 1, 1, 5.0, 5.0) < 0.9
    for _ in range(13):  # a quiet minute later the burst has left the window
        now += 5.0
        pool.observe(now, 0, 5.0, 0)
    assert pool.size(now, 1, 5.0, 5.0, 500) == 0


def test_no_pool_when_reactive_scaling_met_the_target() -> None:
    pool = StandingPool(window_seconds=600.0, target=0.9, refresh_seconds=0.0)
    for i in range(20):
        pool.observe(5.0 * (i + 1), 10, 5.0, 12)  # 2 jobs/s served by 12 ready pods
    assert pool.size(100.0, 1, 5.0, 5.0, 500) == 0


def test_refresh_is_amortised() -> None:
    pool = StandingPool(window_seconds=600.0, target=0.9, refresh_seconds=30.0)
    pool.observe(5.0, 100, 5.0, 0)
    first = pool.size(5.0, 1, 5.0, 5.0, 500)
    pool.observe(10.0, 1000, 5.0, 0)
    assert pool.size(10.0, 1, 5.0, 5.0, 500) == first  # not due yet
    assert pool.size(40.0, 1, 5.0, 5.0, 500) > first


def _season(pool: StandingPool, now: float, reactive: list[int]) -> float:
    """A minute with a 10 s burst at its start, with ``reactive`` ready pods tick by tick."""
    for arrivals, ready in zip((100, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), reactive, strict=True):
        now += 5.0
        pool.observe(now, arrivals, 5.0, ready)
    return now


def _burst_history(pool: StandingPool) -> float:
    """Three such minutes that reactive scaling missed outright; returns the last tick's time."""
    now = 0.0
    for _ in range(3):
        now = _season(pool, now, [0] * 12)
    return now


def test_a_forecaster_that_serves_a_whole_season_alone_retires_the_history_before_it() -> None:
    pool = StandingPool(window_seconds=3600.0, target=0.85, refresh_seconds=0.0)
    now = _burst_history(pool)
    assert pool.size(now, 1, 5.0, 5.0, 500) > 0
    pool.prove(now, 60.0)
    now = _season(pool, now, [200] * 12)  # pods ordered ahead: every job on time
    assert pool.size(now - 5.0, 1, 5.0, 5.0, 500) > 0  # on probation until the season is over
    assert pool.size(now, 1, 5.0, 5.0, 500) == 0


def test_one_late_job_in_the_season_keeps_the_history_and_the_next_season_is_judged() -> None:
    pools = [StandingPool(window_seconds=3600.0, target=0.85, refresh_seconds=0.0) for _ in range(2)]
    on_probation, plain = pools
    for pool in pools:
        now = _burst_history(pool)
    on_probation.prove(now, 60.0)
    for pool in pools:
        later = _season(pool, now, [200, 20] + [200] * 10)  # the burst's second tick half covered
    assert on_probation.size(later, 1, 5.0, 5.0, 500) == plain.size(later, 1, 5.0, 5.0, 500) > 0
    later = _season(on_probation, later, [200] * 12)
    assert on_probation.size(later, 1, 5.0, 5.0, 500) == 0


def test_a_season_without_jobs_proves_nothing() -> None:
    pool = StandingPool(window_seconds=3600.0, target=0.85, refresh_seconds=0.0)
    now = _burst_history(pool)
    held = pool.size(now, 1, 5.0, 5.0, 500)
    pool.prove(now, 60.0)
    for _ in range(12):
        now += 5.0
        pool.observe(now, 0, 5.0, 0)
    assert pool.size(now, 1, 5.0, 5.0, 500) == held > 0


def test_a_cancelled_probation_retires_nothing() -> None:
    pool = StandingPool(window_seconds=3600.0, target=0.85, refresh_seconds=0.0)
    now = _burst_history(pool)
    pool.prove(now, 60.0)
    pool.cancel_probation()  # the season was lost before its first cycle was over
    now = _season(pool, now, [200] * 12)  # a cycle that would have passed
    assert pool.size(now, 1, 5.0, 5.0, 500) > 0


def test_a_probation_needs_a_season_longer_than_zero() -> None:
    with pytest.raises(ValueError, match="longer than 0"):
        StandingPool(window_seconds=60.0, target=0.9).prove(0.0, 0.0)


@given(
    threshold=st.integers(min_value=0, max_value=260),
    limit=st.integers(min_value=0, max_value=250),
    guess=st.integers(min_value=-5, max_value=300),
)
def test_the_pool_search_finds_the_smallest_enough_size_from_any_guess(
    threshold: int, limit: int, guess: int
) -> None:
    """Any starting guess (the last answer, possibly from a larger limit) finds what a bisection
    over 0..limit finds: the smallest size that is enough, or the limit when none is."""
    tested: list[int] = []

    def enough(pods: int) -> bool:
        assert 0 <= pods <= limit, f"tested {pods} outside 0..{limit}"
        tested.append(pods)
        return pods >= threshold

    assert smallest_enough(enough, limit, guess) == min(threshold, limit)
    if threshold == 0:
        assert tested == [0]  # no pool needed: one replay of the window


def test_a_refresh_that_keeps_the_pool_where_it_was_replays_the_window_three_times() -> None:
    tested: list[int] = []

    def enough(pods: int) -> bool:
        tested.append(pods)
        return pods >= 57

    assert smallest_enough(enough, 200, 57) == 57
    assert tested == [0, 57, 56]


def sequential_attainment(
    ticks: list[tuple[float, float, float]], pods: int, slots: int, service: float, max_wait: float
) -> float:
    """The fluid model tick by tick, as written before it was vectorised: the reference."""
    total = sum(t[0] for t in ticks)
    if total <= 0:
        return 1.0
    queue = met = 0.0
    for count, interval, reactive in ticks:
        servers = max(pods, reactive) * slots
        rate = servers / service
        budget = max(max_wait * rate, servers - 1.0)  # a free slot waits for nothing
        growth = count - rate * interval
        if count > 0 and rate > 0:
            if queue <= budget and queue + growth <= budget:
                met += count
            elif queue <= budget:
                met += count * (budget - queue) / growth
            elif queue + growth <= budget:
                met += count * (1.0 - (queue - budget) / -growth)
        queue = max(0.0, queue + growth)
    return met / total


@settings(max_examples=300)
@given(
    ticks=st.lists(
        st.tuples(
            st.sampled_from([0.0, 1.0, 3.0, 40.0, 250.0]) | st.floats(0, 500),
            st.sampled_from([5.0, 1.0, 2.5]),
            st.sampled_from([0.0, 1.0, 10.0]) | st.integers(0, 60).map(float),
        ),
        max_size=80,
    ),
    pods=st.integers(0, 80),
    slots=st.integers(1, 4),
    service=st.sampled_from([5.0, 0.5, 12.0]),
    max_wait=st.sampled_from([5.0, 0.0, 1.5]),
)
def test_the_window_columns_give_the_tick_by_tick_attainment(
    ticks: list[tuple[float, float, float]], pods: int, slots: int, service: float, max_wait: float
) -> None:
    """The closed-form queue (cumulative sums) agrees with the recursion it replaces."""
    expected = sequential_attainment(ticks, pods, slots, service, max_wait)
    assert fluid_attainment(ticks, pods, slots, service, max_wait) == pytest.approx(expected, abs=1e-9)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans()), max_size=40))
def test_the_copied_columns_follow_the_ticks_through_any_appends_and_drops(
    steps: list[tuple[int, int, bool]],
) -> None:
    """Rows appended at the right, dropped at the left, read in between or not: always the deque."""
    ticks: deque[tuple[float, float, float, float]] = deque()
    columns = _Columns()
    stamp = 0.0
    for added, dropped, read in steps:
        for _ in range(added):
            stamp += 5.0
            ticks.append((stamp, stamp * 2, 5.0, stamp % 7))
            columns.appended += 1
        for _ in range(min(dropped, len(ticks))):
            ticks.popleft()
        if read:
            assert columns.of(ticks).tolist() == [list(t) for t in ticks]
    assert columns.of(ticks).tolist() == [list(t) for t in ticks]


def test_a_restored_pool_sizes_from_the_restored_ticks() -> None:
    """The columns copied before a restore describe other ticks: the restore starts them afresh."""
    busy, quiet = StandingPool(600.0, 0.9, refresh_seconds=0.0), StandingPool(600.0, 0.9, refresh_seconds=0.0)
    for k in range(1, 11):
        busy.observe(5.0 * k, 200 if k == 5 else 0, 5.0, 0)
        quiet.observe(5.0 * k, 0, 5.0, 0)
    assert busy.size(50.0, 1, 5.0, 5.0, 500) > 0 and quiet.size(50.0, 1, 5.0, 5.0, 500) == 0
    load(quiet, dump(busy), "pool")
    assert quiet.size(55.0, 1, 5.0, 5.0, 500) == busy.size(55.0, 1, 5.0, 5.0, 500) > 0
