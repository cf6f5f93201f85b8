"""The protocol operations added for the API (backlog, rate limit, result cache, traffic weights)
against a real Valkey server, in both client flavours where it matters."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio

from jobqueue import JobStatus, Keyspace
from jobqueue import sync as jq
from jobqueue.backlog import Backlog, read_backlog
from jobqueue.binding import bind_async, bind_sync
from jobqueue.cache import cache_key, lookup, remember
from jobqueue.consumer import Outcome
from jobqueue.ratelimit import MAX_REFILL_SECONDS, RateLimit, bucket_key, take_token
from jobqueue.traffic import clear_traffic, read_traffic, set_traffic, traffic_key

pytestmark = pytest.mark.integration

backlog = bind_sync(read_backlog)
take = bind_sync(take_token)
cache_lookup = bind_sync(lookup)
cache_remember = bind_sync(remember)


def test_backlog_counts_waiting_and_in_flight_of_several_queues(redis_client: redis.Redis) -> None:
    assert backlog(redis_client, []) == {}
    assert backlog(redis_client, ["a:v1"]) == {"a:v1": Backlog(0, 0)}  # never submitted to
    for i in range(3):
        jq.submit_job(redis_client, "a:v1", i)
    jq.submit_job(redis_client, "b:v1", "x")
    [entry] = jq.fetch(redis_client, "a:v1", "w1", block_ms=50)
    jq.start(redis_client, entry, "w1")
    assert backlog(redis_client, ["a:v1", "b:v1"]) == {"a:v1": Backlog(2, 1), "b:v1": Backlog(1, 0)}


def test_token_bucket_burst_then_rate_and_isolation(redis_client: redis.Redis) -> None:
    # One token per 500 ms: the four takes below may stall that long on a loaded machine and
    # still see the burst spent.
    limit = RateLimit(rate=2.0, burst=3)
    decisions = [take(redis_client, "key:a", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 0 < decisions[3].retry_after <= 0.5 + 1e-9
    assert take(redis_client, "key:b", limit).allowed  # another client, another bucket
    time.sleep(decisions[3].retry_after + 0.05)
    assert take(redis_client, "key:a", limit).allowed  # refilled
    key = bucket_key("key:a")
    assert "key:a" not in key and key.startswith("jq:ratelimit:")  # secrets never in key names
    assert 0 < redis_client.ttl(key) <= 2  # idle buckets expire once full again (3 tokens at 2/s)


@pytest.mark.parametrize("limit", [RateLimit(rate=1 / 86400, burst=1), RateLimit(rate=1e9, burst=8.64e13)])
def test_the_slowest_bucket_a_rate_limit_allows_expires_within_a_day(
    redis_client: redis.Redis, limit: RateLimit
) -> None:
    """A bucket expires once full again (burst / rate); a refill time past what EXPIRE takes made
    every take fail. RateLimit refuses more than a day, and a day's expiry is what Redis sets."""
    assert take(redis_client, "key:slow", limit).allowed
    assert 86_000 < redis_client.ttl(bucket_key("key:slow")) <= MAX_REFILL_SECONDS


def test_token_bucket_is_atomic_under_concurrency(redis_url: str) -> None:
    async def burst() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        take_async = bind_async(take_token)
        limit = RateLimit(rate=0.001, burst=10)
        try:
            results = await asyncio.gather(*(take_async(client, "key:c", limit) for _ in range(50)))
        finally:
            await client.aclose()
        return sum(d.allowed for d in results)

    assert asyncio.run(burst()) == 10


def test_result_cache_hits_only_successes(redis_client: redis.Redis) -> None:
    q = "m:v1"
    assert cache_lookup(redis_client, q, {"a": 1}) is None
    job_id = jq.submit_job(redis_client, q, {"a": 1}).job_id
    cache_remember(redis_client, q, {"a": 1}, job_id, 30)
    cache_remember(redis_client, q, {"a": 1}, "other", 30)  # an in-progress entry is kept
    assert redis_client.get(cache_key(q, {"a": 1})) == job_id.encode()
    whole_records = hgetall_calls(redis_client)
    assert cache_lookup(redis_client, q, {"a": 1}) is None  # queued: a miss that keeps the entry
    assert redis_client.get(cache_key(q, {"a": 1})) == job_id.encode()
    assert hgetall_calls(redis_client) == whole_records  # its status alone was read
    [entry] = jq.fetch(redis_client, q, "w1", block_ms=50)
    jq.start(redis_client, entry, "w1")
    jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {"label": "cat"}, 0.01)
    hit = cache_lookup(redis_client, q, {"a": 1})
    assert hit is not None and hit.id == job_id and hit.output == {"label": "cat"}
    assert 0 < redis_client.ttl(cache_key(q, {"a": 1})) <= 30
    assert cache_key(q, {"a": 1, "b": 2}) == cache_key(q, {"b": 2, "a": 1})
    assert cache_key("m:v2", {"a": 1}) != cache_key(q, {"a": 1})

    failed = jq.submit_job(redis_client, q, {"a": 2}).job_id
    cache_remember(redis_client, q, {"a": 2}, failed, 30)
    [entry] = jq.fetch(redis_client, q, "w1", block_ms=50)
    jq.start(redis_client, entry, "w1")
    assert jq.finish(redis_client, entry, "w1", Outcome.FAILED, "bad", 0.01) is JobStatus.FAILED
    assert cache_lookup(redis_client, q, {"a": 2}) is None
    assert redis_client.get(cache_key(q, {"a": 2})) is None  # dropped: the next job takes the entry
    with pytest.raises(ValueError, match="ttl"):
        cache_remember(redis_client, q, {"a": 3}, "x", 0)
    cache_remember(redis_client, q, {"a": 4}, "expired-or-never-was", 30)
    assert cache_lookup(redis_client, q, {"a": 4}) is None
    assert redis_client.get(cache_key(q, {"a": 4})) is None  # a job gone never succeeds: dropped


def hgetall_calls(client: redis.Redis) -> int:
    """HGETALLs the server has run (its command statistics)."""
    return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def test_traffic_weights_set_read_clear(redis_client: redis.Redis) -> None:
    bind_sync(set_traffic)(redis_client, "resnet", {"v1": 90, "v2": 10})
    bind_sync(set_traffic)(redis_client, "bert", {"v3": 1})
    redis_client.hset(traffic_key(), "broken", "{not json")  # a bad entry by hand is skipped
    assert bind_sync(read_traffic)(redis_client) == {"resnet": {"v1": 90.0, "v2": 10.0}, "bert": {"v3": 1.0}}
    bind_sync(clear_traffic)(redis_client, "resnet")
    assert set(bind_sync(read_traffic)(redis_client)) == {"bert"}
    with pytest.raises(ValueError, match="at least one version"):
        bind_sync(set_traffic)(redis_client, "resnet", {"v1": 0})
    with pytest.raises(ValueError, match="finite"):
        bind_sync(set_traffic)(redis_client, "resnet", {"v1": -1})
    with pytest.raises(ValueError, match="invalid queue name"):
        bind_sync(set_traffic)(redis_client, "resnet", {"v 1": 1})
    assert Keyspace().prefix in traffic_key()
