"""Synchronous inference (the seed router's endpoint): submit to ``MODEL_REF`` and wait for the result.

A Redis failure is a 503 that tells the client whether resending is safe (see :func:`_accepted`).

One deadline per request (``timeout``, capped by ``INFER_TIMEOUT``, from when the handler starts)
covers every phase: the submission (a slow or retrying Redis) and the wait. The answer comes at the
deadline, never at the deadline plus however long the submission took. A submission still in flight
at the deadline is abandoned (504): the job may or may not have been stored, and its id, chosen
before the write, tells which (``GET`` answers 404 if it was not).

The wait polls the job record (no connection held between polls) and races the client: once the
client disconnects, waiting stops at once (no polling for an answer nobody reads, and the
``MAX_CONCURRENCY`` slot is freed), and the job is cancelled if it is still queued, so no worker
spends GPU time on it; a job a worker already started is left to finish (``api_infer_abandoned``
counts each outcome). A disconnect during the submission is acted on once it returns: cancelling a
write half way would leave it unknown whether the job exists.

``MAX_CONCURRENCY`` bounds the requests waiting in this process: beyond it the caller gets 429 at
once rather than a slow queue of open connections. On timeout the job is *not* cancelled (the
client is still there to be told): the 504 says where to fetch it later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.exceptions
from fastapi import APIRouter, Request, Response
from starlette.types import Receive

from api.deps import CallerDep, KeyFirstRoute, job_url, rendered
from api.errors import REDIS_RETRY_AFTER, ApiError, SubmissionUnknownError
from api.routes_jobs import SUBMIT_ERRORS
from api.schemas import InferRequest, InferResult, Problem
from api.service import Accepted, JobService, elapsed_ms, new_job_id
from jobqueue import Job, JobStatus
from jobqueue.errors import describe, transient

router = APIRouter(tags=["inference"], route_class=KeyFirstRoute)  # the key before the body

TIMEOUT_RETRY_AFTER = 2.0

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client left first: never received, but it is what the request
metrics and access logs record."""

STOP_RECHECK = 0.02
"""Seconds between two cancels of a task that must stop (see :func:`_race`)."""

DISCONNECT_RECHECK = 0.05
"""Pause between two reads of the request channel that were not a disconnect (none is expected once
the body is read; the pause keeps a server that answers them at once from spinning the loop)."""

INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **SUBMIT_ERRORS,
    502: {"model": Problem, "description": "The job failed (the error is in `detail`)"},
    503: {
        "model": Problem,
        "description": "Redis unavailable (see Retry-After). With `id` and `url` once the job's write was "
        "sent: it may exist, follow it rather than resend. With `queued: false` when nothing was stored: "
        "resending is safe",
    },
    504: {"model": Problem, "description": "No result within the timeout; `id` and `url` fetch it later"},
}
INFER_ERRORS.pop(200)


class ClientGoneError(Exception):
    """The client disconnected while its request waited."""


@router.post("/infer", response_model=InferResult, responses=INFER_ERRORS, summary="Submit and wait")
async def infer(body: InferRequest, c: CallerDep, request: Request) -> Response:
    """Run the prompt on MODEL_REF and return the output, within `timeout` (or INFER_TIMEOUT) seconds."""
    service = c.service
    config = service.config
    with c.gate.slot():
        start = time.perf_counter()
        timeout = min(body.timeout or config.infer_timeout, config.infer_timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        job_id = new_job_id()
        submission = service.submit(
            api_key=c.api_key, client_addr=c.addr, model=config.default_model, version=None,
            input=body.prompt, job_id=job_id,
        )  # fmt: skip
        [submitted] = await _race(deadline, submission)
        if submitted is None:
            url = job_url(job_id)
            raise ApiError(
                504, "timeout", f"the submission did not complete within {timeout:g} s (Redis slow or "
                f"unreachable): the job may or may not have been queued; {url} answers 404 if it was not",
                retry_after=TIMEOUT_RETRY_AFTER, reason="timeout", id=job_id, url=url,
            )  # fmt: skip
        accepted = _accepted(submitted, job_id)  # a refusal (429, 503, ...) raises here
        url = job_url(accepted.job_id)
        try:
            job = accepted.cached_job or await _wait(service, request.receive, accepted.job_id, deadline)
        except redis.exceptions.RedisError as exc:  # the job was accepted: say where it is
            if not transient(exc):
                raise
            raise ApiError(
                503, "redis_unavailable",
                f"the job was queued, but while waiting for its result the job store (Redis) "
                f"{describe(exc)}; do not resend it: fetch it later at {url}", retry_after=REDIS_RETRY_AFTER,
                reason="redis_unavailable", id=accepted.job_id, url=url, queued=True,
            ) from exc  # fmt: skip
        except ClientGoneError:
            outcome = await service.abandon(accepted.job_id)
            raise ApiError(
                CLIENT_CLOSED_REQUEST, "client_disconnected",
                f"the client disconnected before the answer; job {outcome}", id=accepted.job_id, url=url,
            ) from None  # fmt: skip
        if job is None or not job.status.terminal:
            raise ApiError(
                504, "timeout", f"no result within {timeout:g} s; the job continues: fetch it at {url}",
                retry_after=TIMEOUT_RETRY_AFTER, reason="timeout", id=accepted.job_id, url=url,
            )  # fmt: skip
        if job.status is not JobStatus.SUCCEEDED:
            raise ApiError(
                502, "job_failed", f"job {job.id} {job.status.value}: {job.error or 'no error recorded'}",
                id=job.id, url=url, status=job.status.value,
            )  # fmt: skip
        return rendered(  # an output of any depth (see rendered)
            InferResult(
                id=job.id, modelRef=accepted.queue, prompt=body.prompt, routerPod=config.hostname,
                kvEndpoints=list(config.kv_endpoints), processingMs=elapsed_ms(start), output=job.output,
                cached=accepted.cached_job is not None,
            )
        )  # fmt: skip


def _accepted(submitted: asyncio.Future[Any], job_id: str) -> Accepted:
    """The submission's outcome, or the 503 for a Redis failure that says whether the job was stored.

    ``/infer`` takes no idempotency key, so a client may resend a refused request only when it is
    sure nothing was queued; the body tells it, never the status alone (a proxy's 503 says nothing).
    Once the write was sent the job may exist, and the 503 names it (``id``, ``url``) for the client
    to follow instead of resending; before it (the rate limit and cache reads), nothing was written,
    and the 503 says ``queued: false``: the one 503 a client may resend.
    """
    try:
        accepted: Accepted = submitted.result()
    except SubmissionUnknownError as exc:
        url = job_url(job_id)
        raise ApiError(
            503, "redis_unavailable",
            f"the job store (Redis) {describe(exc.cause)} as the job was written: it may or may not have "
            f"been queued; do not resend it: {url} answers 404 if it was not",
            retry_after=REDIS_RETRY_AFTER, reason="redis_unavailable", id=job_id, url=url,
        ) from exc  # fmt: skip
    except redis.exceptions.RedisError as exc:
        if not transient(exc):
            raise
        raise ApiError(
            503, "redis_unavailable",
            f"the job store (Redis) {describe(exc)} before the job was written: nothing was queued; "
            "retry later", retry_after=REDIS_RETRY_AFTER, reason="redis_unavailable", queued=False,
        ) from exc  # fmt: skip
    return accepted


async def _wait(service: JobService, receive: Receive, job_id: str, deadline: float) -> Job | None:
    """The job once terminal; its last record (or None) at ``deadline``; :class:`ClientGoneError` as
    soon as the client disconnects. The poll is stopped either way: nothing is left polling Redis."""
    left = max(0.0, deadline - asyncio.get_running_loop().time())
    polled, gone = await _race(deadline, service.wait(job_id, left), _disconnected(receive))
    if polled is not None:  # an answer wins over a disconnect seen in the same instant
        job: Job | None = polled.result()
        return job
    if gone is not None:
        raise ClientGoneError
    return None  # the deadline


async def _race(deadline: float, *work: Awaitable[Any]) -> list[asyncio.Future[Any] | None]:
    """Run ``work`` side by side until one ends or ``deadline`` passes, then stop the rest; returns
    per awaitable, in order, its finished task (``.result()`` is its outcome) or None if it had not
    ended by then.

    Stopping means cancelling *until the task has ended*, not once: on Python 3.11 a cancel that
    lands just as redis-py finishes sending a command is swallowed (a known race in 3.11's
    ``asyncio.wait_for``, which redis-py sends through; 3.12 rewrote it), and the task runs on: a
    poll cancelled once kept polling a job until the job finished.
    """
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(
            tasks, timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
            return_when=asyncio.FIRST_COMPLETED,
        )  # fmt: skip
        ended = [t.done() for t in tasks]
    finally:
        await _stop(tasks)
    for task, in_time in zip(tasks, ended, strict=True):
        if not in_time and not task.cancelled():  # ran past the deadline, then ended by itself
            task.exception()  # retrieved: its outcome came too late to count
    return [t if in_time else None for t, in_time in zip(tasks, ended, strict=True)]


async def _stop(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel the tasks still running, again every ``STOP_RECHECK`` s until all have ended."""
    running = {t for t in tasks if not t.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=STOP_RECHECK)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has disconnected.

    Reads the request channel itself rather than polling ``Request.is_disconnected()``: the body is
    read by now, so the server's ``receive`` blocks until the connection closes (uvicorn) or the
    response is sent (test clients), and the disconnect is seen the moment it happens at no cost.
    """
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(DISCONNECT_RECHECK)
