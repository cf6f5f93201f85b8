"""The submission pipeline every endpoint shares (``/push``, ``/v1/jobs``, ``/infer``), in the order
that keeps refusals cheap and honest:

1. authenticate the key (401), route model and version to a queue (422 for an unknown model or
   version), authorize the key on the model (403);
2. rate limit the client (429) and look the input up in the result cache (a hit answers without
   queueing, so it skips the backlog check): both reads in one round trip, each only when
   configured;
3. circuit breaker on the queue's backlog (429, a dictionary lookup, no Redis);
4. submit: the job record and its stream entry are written by one script (with the cache entry in
   the same round trip); the caller answers 202 only after that returned, so an accepted job is in
   Redis, never only in this process (in its memory and AOF, not necessarily fsynced yet: see
   "Durability" in docs/api.md).
   An idempotency key is scoped to the caller (a digest of its API key, when keys are checked) and
   bound to a fingerprint of the request: reusing it for a different request is a 422.

Without rate limit and cache, a submission is exactly one round trip to Redis (a retry that its
idempotency key matches to an earlier job: two, the second checking that job still exists).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions

from api.admission import BacklogMonitor, ConcurrencyGate
from api.auth import Authenticator
from api.config import ApiConfig
from api.errors import ApiError, SubmissionUnknownError
from api.metrics import ApiMetrics
from api.routing import TrafficRouter
from jobqueue import IdempotencyKeyReusedError, Job, JobStatus, MalformedJobError, Priority, cache
from jobqueue import aio as jq
from jobqueue.combine import concurrently
from jobqueue.driver import Op, arun
from jobqueue.errors import transient
from jobqueue.keys import queue_name
from jobqueue.ops import (
    bind_idempotency_key,
    idempotency_holder,
    idempotency_known,
    idempotency_live,
    request_fingerprint,
    submit_job,
)
from jobqueue.ratelimit import RateDecision, take_token

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission's answer: a new or matched job id (``status`` as found), or a cached job."""

    job_id: str
    queue: str
    created: bool
    found: JobStatus = JobStatus.QUEUED
    cached_job: Job | None = None

    @property
    def status(self) -> JobStatus:
        return self.cached_job.status if self.cached_job else self.found


class JobService:
    def __init__(
        self,
        *,
        client: redis.asyncio.Redis,
        config: ApiConfig,
        metrics: ApiMetrics,
        router: TrafficRouter,
        backlog: BacklogMonitor,
        auth: Authenticator,
        infer_gate: ConcurrencyGate,
    ) -> None:
        self.client = client
        self.config = config
        self.settings = config.settings
        self.metrics = metrics
        self.router = router
        self.backlog = backlog
        self.auth = auth
        self.infer_gate = infer_gate

    async def submit(
        self,
        *,
        api_key: str | None,
        client_addr: str,
        model: str,
        version: str | None,
        input: Any,
        priority: Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Accepted:
        """Authenticate, route, admit and write the job; ``job_id`` (default: a new one) lets a caller
        that may give up before the write returns (``/infer``'s deadline) name the job all the same.

        A transient Redis failure (:func:`jobqueue.errors.transient`) before the write is raised as
        is: nothing was stored. Once the write was sent it is :class:`SubmissionUnknownError`, naming
        the job, which may or may not exist."""
        self.auth.authenticate(api_key)
        queue = self.router.resolve(model, version, sticky=idempotency_key)
        self.auth.authorize(api_key, model)
        limit, ttl, settings = self.config.rate_limit, self.config.result_cache_ttl, self.settings
        checks: dict[str, Op[Any]] = {}  # independent reads: one round trip for all of them
        if limit is not None:
            # A key names the caller only once it is checked: with authentication off, any header
            # value would do, and a fresh one per request would be a fresh bucket.
            keyed = self.auth.enabled and api_key
            who = f"key:{api_key}" if keyed else f"addr:{client_addr}"
            checks["rate"] = take_token(who, limit, settings=settings)
        caller = self.auth.principal(api_key)  # None with authentication off: one shared cache
        if ttl:
            checks["cache"] = cache.lookup(queue, input, scope=caller, settings=settings)
            if idempotency_key is not None:
                checks["known"] = idempotency_known(queue, str(idempotency_key), caller, settings=settings)
        if version is None and idempotency_key is not None:
            # Routed by weight: the split may have moved since the key was used, even away from
            # the version that holds it (a rollback), so every queue of the model is asked.
            routed = [
                queue,
                *(q for v in self.router.versions(model) if (q := queue_name(model, v)) != queue),
            ]
            key = str(idempotency_key)
            checks["held"] = idempotency_holder(model, routed, key, caller, settings=settings)
        found: dict[str, Any] = {}
        if checks:
            found = dict(zip(checks, await arun(self.client, concurrently(*checks.values())), strict=True))
        decision: RateDecision | None = found.get("rate")
        if decision is not None and not decision.allowed:
            raise ApiError(
                429, "rate_limited", "rate limit exceeded for this client; slow down",
                retry_after=decision.retry_after, reason="rate_limited",
            )  # fmt: skip
        hit: Job | None = found.get("cache")
        if found.get("known") or found.get("held"):
            # A key already bound to a request decides, not the cache (which matched the input
            # alone): the key's own job for the same request, a 422 for another. Served from the
            # cache, a reused key was answered 200 with whatever job had the same input.
            hit = None
        scope = fingerprint = None
        if idempotency_key is not None:
            # Keys are per caller, and bound to the request as the client sent it: the version it
            # named (None when routed by weight), so a retry matches wherever it was routed.
            scope = caller
            fingerprint = request_fingerprint(model, version, input, priority, metadata)
        if hit is not None and fingerprint is not None:
            # The key answers its retries with the job it was answered with: unbound, a retry after
            # the cache entry expired queued a second job. Bound elsewhere meanwhile (a concurrent
            # request with the key): the submission below answers as the key says.
            bind = bind_idempotency_key(
                queue, str(idempotency_key), hit.id, fingerprint, scope, settings=settings
            )
            if not await arun(self.client, bind):
                hit = None
        if hit is not None:
            self.metrics.submissions.labels(queue, "cached").inc()
            return Accepted(hit.id, queue, created=False, cached_job=hit)
        queue = found.get("held") or queue
        if self.backlog.full(queue) and not await self._retry_of_known_key(
            queue, idempotency_key, caller, found
        ):
            self.backlog.check(queue)
        job_id = job_id or new_job_id()
        write = submit_job(
            queue, input, priority=priority, idempotency_key=idempotency_key, idempotency_scope=scope,
            fingerprint=fingerprint, metadata=metadata, job_id=job_id, settings=settings,
        )  # fmt: skip
        try:
            if ttl:  # the cache entry rides along; if an idempotency key matched (or refused) an
                # older job instead, the entry names an id that never existed: the next lookup drops it
                sub, _ = await arun(
                    self.client,
                    concurrently(
                        write, cache.remember(queue, input, job_id, ttl, scope=caller, settings=settings)
                    ),
                )
            else:
                sub = await arun(self.client, write)
        except redis.exceptions.RedisError as exc:
            if not transient(exc):
                raise
            # Sent, so possibly stored: a reply lost with its connection, or an error reply to a retry
            # the Redis client made by itself after such a loss, hides a write that happened.
            raise SubmissionUnknownError(job_id, exc) from exc
        except IdempotencyKeyReusedError:
            raise ApiError(
                422, "idempotency_key_reused",
                f"idempotency_key {idempotency_key!r} was already used for a different request (model, "
                "version, input, priority or metadata differ); nothing was queued. Use a new key for a "
                "new request; resend the identical request to get the first job",
                reason="invalid",
            ) from None  # fmt: skip
        if sub.created:
            self.backlog.accepted(queue)
        self.metrics.submissions.labels(queue, "created" if sub.created else "duplicate").inc()
        return Accepted(sub.job_id, queue, created=sub.created, found=sub.status)

    async def _retry_of_known_key(
        self, queue: str, idempotency_key: str | None, caller: str | None, found: dict[str, Any]
    ) -> bool:
        """Whether ``queue`` knows ``idempotency_key`` for a job that still exists: a retry, which
        queues nothing, so the backlog's breaker does not refuse it. Overloaded is when answers time
        out and clients resend; refused 429, the retry of an accepted job was told to retry later
        instead of getting its job. A key whose job is gone is forgotten and the submission queues a
        new job: the breaker applies (a record alone let any old key past a full queue). Asked only
        of a full queue (two more round trips; none when the cache lookup found no record)."""
        if idempotency_key is None:
            return False
        if found.get("held"):  # another version's queue holds it, for a live job: ``queue`` is that one now
            return True
        if "known" in found and not found["known"]:
            return False
        live = idempotency_live(queue, str(idempotency_key), caller, settings=self.settings)
        return bool(await arun(self.client, live))

    async def get(self, job_id: str, api_key: str | None) -> Job:
        """The job, or 404; with authentication on, the key must be allowed on the job's model.

        A record that does not decode (a field missing, not valid UTF-8, or not parsed by its type)
        is a 500 ``job_record_corrupt`` naming the job and the field (``id``, ``field``), not the
        generic 500 nor a 4xx: the request was right, the server's own data is damaged. Not a 503
        and no ``Retry-After`` either: reading the same bytes again gives the same answer, so the
        client is told to stop, and the operator what to look at. A job view is not guessed from
        the fields that do decode (the corrupt one may be its status); the record is logged."""
        self.auth.authenticate(api_key)
        try:
            job = await jq.get_job(self.client, job_id, settings=self.settings)
        except MalformedJobError as exc:
            raise corrupt_record(job_id, exc) from exc
        if job is None:
            raise ApiError(404, "not_found", f"no job with id {job_id!r} (never submitted, or expired)")
        self.auth.authorize(api_key, job.model)
        return job

    async def cancel(self, job_id: str, api_key: str | None) -> JobStatus:
        """Cancel a queued job: its status afterwards, 404 if unknown, 409 if it already started."""
        await self.get(job_id, api_key)  # 404 / 401 / 403 before any write
        status = await jq.cancel_job(self.client, job_id, settings=self.settings)
        if status is None:
            raise ApiError(404, "not_found", f"no job with id {job_id!r} (never submitted, or expired)")
        if status is not JobStatus.CANCELLED:
            raise ApiError(
                409, "not_cancellable", f"job {job_id} is {status.value}; only queued jobs can be cancelled",
                status=status.value,
            )  # fmt: skip
        return status

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once terminal, or its last record at ``timeout``; a corrupt one as in :meth:`get`."""
        try:
            return await jq.wait_for_job(self.client, job_id, timeout, settings=self.settings)
        except MalformedJobError as exc:
            raise corrupt_record(job_id, exc) from exc

    async def abandon(self, job_id: str) -> str:
        """The client of a synchronous request left before its answer: cancel the job if it is still
        queued (no worker then spends time on a result nobody reads), leave it if a worker started
        it (cancelling cannot stop a running job). Counted and logged; returns the outcome
        (a label of ``api_infer_abandoned``). Never raises for Redis being unavailable: nobody is
        left to answer, and the job then simply runs."""
        try:
            status = await jq.cancel_job(self.client, job_id, settings=self.settings)
        except redis.exceptions.RedisError as exc:
            if not transient(exc):
                raise
            log.warning("job %s: client gone, cancel failed (%s); the job will run", job_id, exc)
            status = None
        if status is JobStatus.CANCELLED:
            outcome = "cancelled"
        elif status is JobStatus.RUNNING:
            outcome = "running"
        elif status is not None and status.terminal:
            outcome = "finished"
        else:
            outcome = "unknown"
        self.metrics.infer_abandoned.labels(outcome).inc()
        log.info("job %s: client disconnected before the answer; job %s", job_id, outcome)
        return outcome

    async def ping(self) -> bool:
        return bool(await self.client.ping())


def corrupt_record(job_id: str, error: MalformedJobError) -> ApiError:
    """The 500 for job ``job_id`` whose stored record does not decode (see :meth:`JobService.get`)."""
    log.error("job %s: its record in Redis does not decode: %s", job_id, error)
    return ApiError(
        500, "job_record_corrupt",
        f"job {job_id}: its stored record cannot be read: {error}; retrying will not help (the data "
        "in the job store is damaged), the record has been logged for the operator",
        id=job_id, field=error.field,
    )  # fmt: skip


def new_job_id() -> str:
    return uuid.uuid4().hex


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
