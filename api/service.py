"""The submission pipeline every endpoint shares (``/push``, ``/v1/jobs``, ``/infer``), in the order
that keeps refusals cheap and honest:

1. authenticate the key (401), route model and version to a queue (422 for an unknown model),
   authorize the key on the model (403);
3. rate limit the client (429, one Redis round trip, only when configured);
4. result cache (a hit answers without queueing, so it skips the backlog check);
5. circuit breaker on the queue's backlog (429, a dictionary lookup);
6. submit: the job record and its stream entry are written by one script; the caller answers 202
   only after that returned, so an accepted job is in Redis, never only in this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from api.admission import BacklogMonitor, ConcurrencyGate
from api.auth import Authenticator
from api.config import ApiConfig
from api.errors import ApiError
from api.metrics import ApiMetrics
from api.routing import TrafficRouter
from jobqueue import Job, JobStatus, Priority, cache
from jobqueue import aio as jq
from jobqueue.binding import bind_async
from jobqueue.ratelimit import take_token

_take_token = bind_async(take_token)
_cache_lookup = bind_async(cache.lookup)
_cache_remember = bind_async(cache.remember)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission's answer: a new or matched job id, or a cached (already succeeded) job."""

    job_id: str
    queue: str
    created: bool
    cached_job: Job | None = None

    @property
    def status(self) -> JobStatus:
        return self.cached_job.status if self.cached_job else JobStatus.QUEUED


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
    ) -> Accepted:
        self.auth.authenticate(api_key)
        queue = self.router.resolve(model, version)
        self.auth.authorize(api_key, model)
        await self._rate_limit(api_key, client_addr)
        ttl = self.config.result_cache_ttl
        if ttl:
            hit = await _cache_lookup(self.client, queue, input, settings=self.settings)
            if hit is not None:
                self.metrics.submissions.labels(queue, "cached").inc()
                return Accepted(hit.id, queue, created=False, cached_job=hit)
        self.backlog.check(queue)
        sub = await jq.submit_job(
            self.client, queue, input, priority=priority, idempotency_key=idempotency_key,
            metadata=metadata, settings=self.settings,
        )  # fmt: skip
        if sub.created:
            self.backlog.accepted(queue)
            if ttl:
                await _cache_remember(self.client, queue, input, sub.job_id, ttl, settings=self.settings)
        self.metrics.submissions.labels(queue, "created" if sub.created else "duplicate").inc()
        return Accepted(sub.job_id, queue, created=sub.created)

    async def _rate_limit(self, api_key: str | None, client_addr: str) -> None:
        limit = self.config.rate_limit
        if limit is None:
            return
        who = f"key:{api_key}" if api_key else f"addr:{client_addr}"
        decision = await _take_token(self.client, who, limit, settings=self.settings)
        if not decision.allowed:
            raise ApiError(
                429, "rate_limited", "rate limit exceeded for this client; slow down",
                retry_after=decision.retry_after, reason="rate_limited",
            )  # fmt: skip

    async def get(self, job_id: str, api_key: str | None) -> Job:
        """The job, or 404; with authentication on, the key must be allowed on the job's model."""
        self.auth.authenticate(api_key)
        job = await jq.get_job(self.client, job_id, settings=self.settings)
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
        return await jq.wait_for_job(self.client, job_id, timeout, settings=self.settings)

    async def ping(self) -> bool:
        return bool(await self.client.ping())


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
