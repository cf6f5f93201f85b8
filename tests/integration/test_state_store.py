"""The learned policy state in a real Valkey: the store, and a loop that restarts onto it."""

from __future__ import annotations

import json
import textwrap
import threading

import pytest
import redis

from autoscaler.config import StreamSourceConfig, TargetConfig, parse_config
from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.engine.state import StateError
from autoscaler.loop import LoopSettings, TargetLoop
from autoscaler.sources.redis_source import StreamSource, connect
from autoscaler.state_store import RedisStateStore, build_state_store
from jobqueue import sync as jq
from tests.unit.doubles import Clock, MemoryTarget

QUEUE = "state:v1"


def target_config(redis_url: str, extra: str = "", prefix: str = "jq") -> TargetConfig:
    text = textwrap.dedent(
        f"""
        targets:
          - name: resnet
            source: {{kind: stream, queue: "{QUEUE}", redis_url: "{redis_url}", prefix: {prefix}}}
            target: {{kind: local}}
            {extra}
        """
    )
    return parse_config(text, allow_local_targets=True).targets[0]


def store_for(redis_url: str, prefix: str = "jq") -> RedisStateStore:
    store = build_state_store(target_config(redis_url, prefix=prefix))
    assert isinstance(store, RedisStateStore)
    return store


def test_the_store_keeps_one_expiring_json_document_per_target(
    redis_url: str, redis_client: redis.Redis
) -> None:
    store = store_for(redis_url, prefix="itest")
    assert store.key == "itest:autoscaler:resnet:state"
    assert store.load() is None
    document = {**StartupAwarePolicy(target_config(redis_url).workload()).export_state(), "saved_at": 1.5}
    store.save(document)
    assert store.load() == json.loads(json.dumps(document))
    assert 86_000_000 < redis_client.pttl(store.key) <= 86_400_000
    store.close()
    assert build_state_store(target_config(redis_url, "state: {persist: false}")) is None


@pytest.mark.parametrize("raw", [b"\x80 not json", b"[1, 2]"])
def test_an_unreadable_document_is_a_state_error_naming_the_key(
    redis_url: str, redis_client: redis.Redis, raw: bytes
) -> None:
    store = store_for(redis_url)
    redis_client.set(store.key, raw)
    with pytest.raises(StateError, match="redis key jq:autoscaler:resnet:state"):
        store.load()


def test_a_store_whose_server_is_gone_raises_a_connection_error_not_a_state_error() -> None:
    store = RedisStateStore(redis.Redis(port=1, socket_connect_timeout=1), "k", 60.0)
    with pytest.raises(redis.ConnectionError):
        store.load()


def loop_on(redis_url: str, clock: Clock, target: MemoryTarget) -> tuple[TargetLoop, StartupAwarePolicy]:
    """One daemon process's loop: its own connections to the source and the store."""
    config = target_config(redis_url)
    policy = StartupAwarePolicy(config.workload())
    assert isinstance(config.source, StreamSourceConfig)
    source = StreamSource(connect(config.source), QUEUE, clock=clock)
    loop = TargetLoop(
        "resnet",
        source,
        target,
        policy,
        LoopSettings(config.workload()),
        clock=clock,
        state_store=store_for(redis_url),
    )
    return loop, policy


def test_a_restarted_loop_continues_with_what_the_last_one_learned(
    redis_url: str, redis_client: redis.Redis
) -> None:
    clock = Clock(now=1_700_000_000.0)
    target = MemoryTarget(clock)
    first, learned = loop_on(redis_url, clock, target)
    target.startups = [45.0, 50.0, 47.0]  # warm-ups measured on this cluster, far from the 30 s default
    for burst in (0, 40, 0, 0, 60, 0):
        for n in range(burst):
            jq.submit_job(redis_client, QUEUE, {"n": n})
        clock.advance()
        first.tick()
    assert learned.startup_estimate > 45.0
    stop_now = threading.Event()
    stop_now.set()
    first.run(stop_now)  # a process that stops saves what it learned on its way out

    clock.advance(20.0)
    second, restarted = loop_on(redis_url, clock, target)
    assert restarted.startup_estimate == 30.0  # cold, until it reads the store
    second.tick()
    assert restarted.startup_estimate == learned.startup_estimate
    assert (
        restarted.export_state()["state"]["_rate_long"]
        != StartupAwarePolicy(target_config(redis_url).workload()).export_state()["state"]["_rate_long"]
    )
