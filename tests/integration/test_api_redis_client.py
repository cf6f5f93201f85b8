"""The API's Redis client (:class:`api.redis_client.ApiRedis`) against a real Valkey server: its
``execute_wire`` answers as a redis-py pipeline does, and keeps its connections clean."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.redis_client import ApiRedis, connect
from jobqueue import JobStatus
from jobqueue import aio as jq
from jobqueue.driver import Wire, _pipeline

pytestmark = pytest.mark.integration

BATCH: Wire = [("SET", "s", "1"), ("HGET", "s", "f"), ("GET", "s"), ("GET", "missing")]
"""A batch whose second command is answered with an error (WRONGTYPE), the others with values."""


def no_retry(url: str) -> ApiRedis:
    """An API client whose connections never retry: a stale connection would fail the command."""
    pool = redis.asyncio.ConnectionPool.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    return ApiRedis(connection_pool=pool)


def replies(raw: list[object]) -> list[object]:
    return [type(r).__name__ + ": " + str(r) if isinstance(r, Exception) else r for r in raw]


def test_execute_wire_answers_as_a_pipeline_does(redis_url: str) -> None:
    async def both() -> tuple[list[object], list[object]]:
        api, plain = connect(redis_url, 5.0), redis.asyncio.Redis.from_url(redis_url)
        try:
            wire = await api.execute_wire(BATCH)
            piped = await _pipeline(plain, BATCH).execute(raise_on_error=False)
            return replies(wire), replies(piped)
        finally:
            await api.aclose()
            await plain.aclose()

    wire, piped = asyncio.run(both())
    assert wire == piped
    assert wire[0] is True or wire[0] == b"OK"
    assert str(wire[1]).startswith("ResponseError: WRONGTYPE")
    assert wire[2:] == [b"1", None]


def test_protocol_operations_run_through_execute_wire(redis_url: str) -> None:
    async def run() -> tuple[bool, JobStatus | None]:
        api = connect(redis_url, 5.0)
        try:
            sub = await jq.submit_job(api, "m:v1", {"x": 1})
            job = await jq.get_job(api, sub.job_id)
            return sub.created, job.status if job else None
        finally:
            await api.aclose()

    assert asyncio.run(run()) == (True, JobStatus.QUEUED)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def run() -> object:
        api = no_retry(redis_url)
        try:
            await api.execute_wire([("CLIENT", "SETNAME", "wire-under-test")])
            for client in redis_client.client_list():
                if client["name"] == "wire-under-test":
                    redis_client.client_kill_filter(_id=client["id"])
            await asyncio.sleep(0.05)  # the close reaches the idle connection
            return (await api.execute_wire([("PING",)]))[0]
        finally:
            await api.aclose()

    assert asyncio.run(run()) in (True, b"PONG")


def test_a_cancelled_exchange_leaves_no_reply_behind(redis_url: str) -> None:
    async def run() -> list[object]:
        api = connect(redis_url, 5.0)
        try:
            slow = asyncio.create_task(api.execute_wire([("BLPOP", "nothing", "1")]))
            await asyncio.sleep(0.1)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            await api.execute_wire([("RPUSH", "nothing", "late")])  # would have answered the BLPOP
            return await api.execute_wire([("PING",), ("LRANGE", "nothing", "0", "-1")])
        finally:
            await api.aclose()

    assert asyncio.run(run())[1:] == [[b"late"]]


def test_aclose_closes_the_wire_connections(redis_url: str, redis_client: redis.Redis) -> None:
    def named() -> int:
        return sum(c["name"] == "wire-closed" for c in redis_client.client_list())

    async def run() -> int:
        api = connect(redis_url, 5.0)
        await asyncio.gather(*(api.execute_wire([("CLIENT", "SETNAME", "wire-closed")]) for _ in range(3)))
        opened = named()
        await api.aclose()
        return opened

    assert asyncio.run(run()) >= 1
    for _ in range(50):
        if named() == 0:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert named() == 0
