"""What a failed read of the queue tells the operator to check (no server needed: the hint is
built from the client's settings and the error alone)."""

from __future__ import annotations

import redis

from autoscaler.sources.redis_source import unavailable


def hint_for(exc: redis.RedisError) -> str:
    client = redis.Redis.from_url("redis://queue-redis:6379/2")  # connects on first use: not here
    try:
        return str(unavailable("stream m:v1", client, exc))
    finally:
        client.close()


def test_a_server_loading_its_data_is_not_called_unreachable() -> None:
    """redis-py makes BusyLoadingError a ConnectionError, so the hint said to check the URL and
    the network of a server that had answered."""
    message = hint_for(redis.BusyLoadingError("Valkey is loading the dataset in memory"))
    assert "queue-redis:6379 is loading its data into memory" in message
    assert "cannot reach" not in message


def test_an_unreachable_server_names_the_setting_and_the_address() -> None:
    message = hint_for(redis.ConnectionError("Error 111 connecting to queue-redis:6379. Connection refused."))
    assert "cannot reach Redis at queue-redis:6379: check the source's redis_url" in message
