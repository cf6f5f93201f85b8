"""Background refreshers keep the last value through errors and always stop."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions

from api.refresh import Refresher


def test_errors_are_survived_and_health_reported() -> None:
    health: list[bool] = []
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise redis.exceptions.ConnectionError("down")

    async def scenario() -> None:
        r = Refresher("t", tick, 0.01, health.append)
        assert await r.run_once()
        r.start()
        while calls < 5:
            await asyncio.sleep(0.01)
        await r.stop()

    asyncio.run(scenario())
    assert health[:4] == [True, False, False, True]


def test_stop_ends_a_loop_whose_cancellation_was_turned_into_an_error() -> None:
    async def tick() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # what a client library's timeout race can do
            raise TimeoutError from None

    async def scenario() -> float:
        r = Refresher("t", tick, 0.01)
        r.start()
        await asyncio.sleep(0.05)  # inside tick
        loop = asyncio.get_running_loop()
        began = loop.time()
        await r.stop(timeout=5)
        return loop.time() - began

    assert asyncio.run(scenario()) < 1


def test_a_misconfigured_redis_is_one_line_saying_what_to_check_not_a_traceback_per_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis refusing the database REDIS_URL names logged a traceback every refresh (two refreshers,
    a few per second); now one error line while it lasts, naming what the operator must fix."""

    async def tick() -> None:
        raise redis.exceptions.ResponseError("DB index is out of range")

    async def scenario() -> None:
        r = Refresher("backlog", tick, 0.01)
        for _ in range(3):
            assert not await r.run_once()

    with caplog.at_level(logging.ERROR, logger="api.refresh"):
        asyncio.run(scenario())
    (record,) = caplog.records
    assert record.exc_info is None
    assert "check the database number in REDIS_URL" in record.getMessage()
