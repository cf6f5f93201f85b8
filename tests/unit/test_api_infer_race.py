"""``/infer``'s race between its work, the client and the deadline, without any server."""

from __future__ import annotations

import asyncio
import contextlib
import time

from api.routes_infer import _race, _stop


async def _stubborn(swallow: int) -> str:
    """Sleeps, ignoring the first ``swallow`` cancels, as a redis-py send does on Python 3.11 when
    a cancel lands just as the send completes (``asyncio.wait_for`` then returns its result)."""
    for _ in range(swallow):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
    await asyncio.sleep(10)
    return "ran on"


def test_stop_cancels_again_until_a_task_that_swallowed_a_cancel_has_ended() -> None:
    async def scenario() -> tuple[asyncio.Task[str], float]:
        task = asyncio.ensure_future(_stubborn(swallow=2))
        await asyncio.sleep(0)  # let it reach its first sleep
        start = time.monotonic()
        await _stop([task])
        return task, time.monotonic() - start

    task, took = asyncio.run(scenario())
    assert task.cancelled() and took < 1


def test_race_returns_the_winner_and_stops_the_rest() -> None:
    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "won"

    async def scenario() -> tuple[list[asyncio.Future[object] | None], float]:
        start = asyncio.get_running_loop().time()
        outcome = await _race(start + 5, quick(), _stubborn(swallow=1))
        return outcome, asyncio.get_running_loop().time() - start

    (won, lost), took = asyncio.run(scenario())
    assert won is not None and won.result() == "won"
    assert lost is None and took < 1


def test_race_at_the_deadline_returns_none_for_each_and_leaves_nothing_running() -> None:
    async def scenario() -> tuple[list[asyncio.Future[object] | None], float, int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome = await _race(start + 0.1, _stubborn(swallow=1), _stubborn(swallow=0))
        others = len(asyncio.all_tasks()) - 1  # this coroutine's own task
        return outcome, loop.time() - start, others

    outcome, took, others = asyncio.run(scenario())
    assert outcome == [None, None] and 0.09 <= took < 1 and others == 0
