"""Worker settings, read once from the environment (the Kubernetes Deployment sets them)."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from jobqueue import Settings, validate_queue
from jobqueue.keys import prefix_from_env

MAX_SECONDS = 7 * 86400.0
"""The longest duration a worker setting takes: a week. Every one of them (heartbeat, lease, poll,
job timeout, model times) is seconds to hours in practice; past the bound they failed deep in the
worker with a traceback (``VISIBILITY_TIMEOUT=1e300`` as milliseconds no Redis command takes,
``POLL_SECONDS=1e12`` as a sleep too long for the OS)."""


def env_float(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 and at most :data:`MAX_SECONDS`, from ``env[name]``
    (``default`` if unset); errors name the variable.

    ``positive``: 0 is refused too (a limit of 0 s is no setting anyone means)."""
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    # nan/inf parse, then fail deep in the loop
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {raw!r}")
    if value > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:.0f} seconds (a week), got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """``maximum``: checked here so the error names the variable, not the call that fails on it later
    (a PORT above 65535 was a bare ``OverflowError: bind(): port must be 0-65535``)."""
    raw = env.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """``name`` is the pod name (HOSTNAME), which is also the consumer name in the stream group and
    the key of the worker's registry entry, so the autoscaler can match heartbeats to pods.

    ``visibility_timeout`` is how long an entry of a worker that stopped heartbeating stays pending
    before another worker reclaims it; live workers renew their entry every heartbeat, so it bounds
    the recovery time after a crash, not the job duration.

    ``job_timeout`` (JOB_TIMEOUT) bounds the job duration instead: the heartbeat would renew the
    lease of a model call that never returns forever, so past this many seconds the worker records
    the attempt as timed out (retried, or dead-lettered at MAX_ATTEMPTS) and exits non-zero to be
    restarted (see :mod:`worker.watchdog`). Set it above the longest legitimate job.
    """

    redis_url: str
    name: str
    queue: str
    model_class: str
    port: int
    visibility_timeout: float
    heartbeat_seconds: float
    poll_seconds: float
    forget_consumers_after: float
    job_timeout: float
    settings: Settings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        heartbeat = env_float(env, "HEARTBEAT_SECONDS", 1.0)
        visibility = env_float(env, "VISIBILITY_TIMEOUT", 30.0)
        if heartbeat <= 0 or visibility <= heartbeat:
            raise ValueError("need 0 < HEARTBEAT_SECONDS < VISIBILITY_TIMEOUT")
        # A registry entry that expires before the next heartbeat renews it makes a live worker
        # vanish between beats: the autoscaler would count it missing (busy pods unprotected).
        worker_ttl = env_float(env, "WORKER_TTL", max(3 * heartbeat, 5.0))
        if worker_ttl <= heartbeat:
            raise ValueError(
                f"need HEARTBEAT_SECONDS < WORKER_TTL (a few heartbeats), got {heartbeat:g} and "
                f"{worker_ttl:g}"
            )
        return cls(
            redis_url=env.get("REDIS_URL", "redis://localhost:6379/0"),
            name=env.get("HOSTNAME") or socket.gethostname(),
            queue=validate_queue(env.get("QUEUE", "default:v1")),
            model_class=env.get("MODEL_CLASS", "worker.model:ReferenceModel"),
            port=_int(env, "PORT", 8080, 0, 65535),
            visibility_timeout=visibility,
            heartbeat_seconds=heartbeat,
            poll_seconds=max(0.05, env_float(env, "POLL_SECONDS", 1.0)),
            forget_consumers_after=env_float(env, "FORGET_CONSUMERS_AFTER", 600.0),
            job_timeout=env_float(env, "JOB_TIMEOUT", 600.0, positive=True),
            settings=Settings(
                prefix=prefix_from_env(env),  # the API's KEY_PREFIX, read the same way
                max_attempts=_int(env, "MAX_ATTEMPTS", 3, 1),
                result_ttl=_int(env, "RESULT_TTL", 24 * 3600, 1, 10**9),  # the API's bound
                worker_ttl=worker_ttl,
            ),
        )
