"""Where a target's learned policy state is kept between processes: one Redis string per target.

The queue's Redis is the natural home: the daemon already depends on it, it outlives any one
autoscaler pod, and every replica of the daemon reaches it. The key is spelled in
:mod:`jobqueue.keys` like every other key of the system.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import redis

from autoscaler.config import StreamSourceConfig, TargetConfig
from autoscaler.engine.state import StateError
from autoscaler.sources.redis_source import connect
from jobqueue.keys import DEFAULT_PREFIX, Keyspace


class StateStore(Protocol):
    """Saves and loads one target's state document."""

    @property
    def location(self) -> str: ...

    def load(self) -> Mapping[str, Any] | None:
        """The saved document, None if there is none; :class:`StateError` if it is unreadable."""
        ...

    def save(self, document: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class RedisStateStore:
    """A JSON document under one key, with an expiry so that a retired target cleans up after itself."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self._client = client
        self.key = key
        self.ttl_seconds = ttl_seconds

    @property
    def location(self) -> str:
        return f"redis key {self.key}"

    def load(self) -> Mapping[str, Any] | None:
        raw = self._client.get(self.key)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.location}: not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise StateError(f"{self.location}: expected a JSON object, got {type(document).__name__}")
        return document

    def save(self, document: Mapping[str, Any]) -> None:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
        self._client.set(self.key, text, px=max(1, round(self.ttl_seconds * 1000)))

    def close(self) -> None:
        self._client.close()


def build_state_store(config: TargetConfig) -> StateStore | None:
    """The store a target's config asks for: its source's Redis, or None when persistence is off."""
    if not config.state.persist:
        return None
    prefix = config.source.prefix if isinstance(config.source, StreamSourceConfig) else DEFAULT_PREFIX
    key = Keyspace(prefix).autoscaler_state(config.name)
    return RedisStateStore(connect(config.source), key, config.state.ttl_seconds)
