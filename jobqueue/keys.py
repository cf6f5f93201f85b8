"""The Redis key layout: the only place in the project where a key name is spelled.

Everything lives under one prefix (default ``jq``) so a deployment can share a Redis with other
software and ``SCAN jq:*`` shows exactly what this system owns. A queue is named ``model:version``
(see :func:`queue_name`); its keys are::

    jq:queues                      SET     every queue submitted to and not retired since (jobqueue.retire)
    jq:q:<queue>:stream            STREAM  normal-priority entries ``{job: <id>}``, group ``workers``
    jq:q:<queue>:stream:high       STREAM  high-priority entries, always read before the normal stream
    jq:q:<queue>:arrivals          STRING  INCR'd once per accepted submission (monotonic arrivals)
    jq:q:<queue>:completions       STREAM  capped (MAXLEN ~): finished_at, duration, job, worker, status,
                                           submitted_at (of the job, so latency needs no record read);
                                           one entry per ended attempt, plus one (duration '') for a
                                           job dead-lettered because its last worker died
    jq:q:<queue>:dead              STREAM  capped dead letters: job, attempts, error, dead_at
    jq:q:<queue>:workers           ZSET    worker name -> last heartbeat (server clock, epoch seconds)
    jq:q:<queue>:idem:<key>        HASH    idempotency record of a key used without a scope: ``job`` (its
                                           id) and ``fingerprint`` (digest of the request that created
                                           it), EX; a STRING holding only the job id if written before
                                           fingerprints were stored (still honoured as a match)
    jq:q:<queue>:idem-by:<scope>:<key>
                                   HASH    the same for a key scoped to one principal (the API scopes
                                           keys to a digest of the caller's API key when keys are
                                           checked), so two tenants' equal keys never meet
    jq:keyed:<model>               ZSET    queues of the model that may hold an idempotency record -> until
                                           when (epoch seconds: the last record's time plus its ttl); a
                                           retry routed by weight asks these, not every queue ever used
    jq:q:<queue>:cache:<digest>    STRING  result cache: digest of the input (and of the caller's scope when
                                           keys are checked) -> id of a job that ran it (EX)
    jq:ratelimit:<digest>          HASH    token bucket of one client identity (hashed)
    jq:traffic                     HASH    model -> version weights as JSON (canary / A-B split)
    jq:job:<id>                    HASH    the job record (see ``jobqueue.types.Job``), plus fields the
                                           scripts keep: ``entry``, ``attempt_token``, ``submit_token``
    jq:worker:<name>               HASH    worker registry entry, EXPIREs unless heartbeats renew it
    jq:done:<id>                   PUBSUB  channel; a message is published when the job reaches a
                                           terminal state (for push-style waiters)
    jq:autoscaler:<target>:state   STRING  the autoscaler's learned policy state for one target, as
                                           JSON (see ``autoscaler.engine.state``), EX a day

Job and worker keys are not scoped by queue because callers look a job up by id alone (the API's
``GET /jobs/{id}``) and a worker is named by its pod. Keys of one queue are not hash-tagged and the
Lua scripts touch a job key and its queue's streams together, so Redis Cluster is not supported;
a single primary (optionally behind Sentinel) is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PREFIX = "jq"
PREFIX_ENV = "KEY_PREFIX"
"""The environment variable the API, the workers and ``python -m api.traffic`` read the prefix from."""
GROUP = "workers"
"""The one consumer group all workers of a queue read through (at-least-once delivery)."""

_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$")
_SCOPE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is a usable key prefix, else raise ``ValueError``."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError("must be 1-32 characters of [A-Za-z0-9._-]")
    return prefix


def prefix_from_env(env: Mapping[str, str]) -> str:
    """The key prefix ``env`` sets in ``KEY_PREFIX`` (``jq`` if unset or blank).

    Every process of one deployment reads it through here, so the API that enqueues and the workers
    that serve read the same variable the same way (the autoscaler's ``source.prefix`` must match
    it). An invalid value raises ``ValueError`` naming the variable.
    """
    raw = env.get(PREFIX_ENV, "").strip()
    if not raw:
        return DEFAULT_PREFIX
    try:
        return validate_prefix(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX_ENV}={raw!r}: {exc}") from None


def validate_queue(queue: str) -> str:
    """Return ``queue`` unchanged if it is a safe queue name, else raise ``ValueError``.

    The name becomes part of key names, so whitespace, braces (Cluster hash tags) and glob
    characters are refused rather than escaped: nobody should have to quote a key in redis-cli.
    """
    if not _QUEUE_RE.match(queue):
        raise ValueError(f"invalid queue name {queue!r}: use [A-Za-z0-9._:@/-], e.g. 'resnet:v1'")
    return queue


def queue_name(model: str, version: str) -> str:
    """The queue serving one model version: ``model:version``."""
    return validate_queue(f"{model}:{version}")


def split_queue(queue: str) -> tuple[str, str]:
    """Inverse of :func:`queue_name`; a queue without a colon has an empty version."""
    model, sep, version = queue.rpartition(":")
    return (model, version) if sep else (queue, "")


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names under one prefix. Immutable and cheap: build one per process and pass it around."""

    prefix: str = DEFAULT_PREFIX

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    def keyed_queues(self, model: str) -> str:
        return f"{self.prefix}:keyed:{model}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def done_channel(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def queue(self, queue: str) -> QueueKeys:
        return QueueKeys(f"{self.prefix}:q:{validate_queue(queue)}")

    @property
    def traffic(self) -> str:
        return f"{self.prefix}:traffic"

    def rate_bucket(self, client_digest: str) -> str:
        return f"{self.prefix}:ratelimit:{client_digest}"

    def autoscaler_state(self, target: str) -> str:
        """Where the autoscaler keeps one target's learned state (``target`` is a config name)."""
        return f"{self.prefix}:autoscaler:{target}:state"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue (see the module docstring for types and meaning)."""

    base: str

    @property
    def stream(self) -> str:
        return f"{self.base}:stream"

    @property
    def high_stream(self) -> str:
        return f"{self.base}:stream:high"

    @property
    def streams(self) -> tuple[str, str]:
        """Both job streams, in the order workers serve them: high priority first."""
        return (self.high_stream, self.stream)

    @property
    def arrivals(self) -> str:
        return f"{self.base}:arrivals"

    @property
    def completions(self) -> str:
        return f"{self.base}:completions"

    @property
    def dead(self) -> str:
        return f"{self.base}:dead"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    def idempotency(self, key: str, scope: str | None = None) -> str:
        """The record of idempotency key ``key``, in the namespace of ``scope`` if given.

        Scoped records live under their own segment (``idem-by``) and a scope has no colon, so
        ``<scope>:<key>`` splits at its first colon and an unscoped key can never spell a scoped
        one (keys may contain colons). Unscoped records keep their original name, so entries
        written before scopes existed are still found.
        """
        if scope is None:
            return f"{self.base}:idem:{key}"
        if not _SCOPE_RE.match(scope):
            raise ValueError(f"invalid idempotency scope {scope!r}: use 1-64 of [A-Za-z0-9_-]")
        return f"{self.base}:idem-by:{scope}:{key}"

    def result_cache(self, input_digest: str) -> str:
        return f"{self.base}:cache:{input_digest}"
