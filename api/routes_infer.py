"""Synchronous inference (the seed router's endpoint): submit to ``MODEL_REF`` and wait for the result.

The wait polls the job record (no connection held between polls). ``MAX_CONCURRENCY`` bounds the
requests waiting in this process: beyond it the caller gets 429 at once rather than a slow queue of
open connections. On timeout the job is *not* cancelled; the 504 says where to fetch it later.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import CallerDep, job_url
from api.errors import REDIS_RETRY_AFTER, REDIS_UNAVAILABLE, ApiError
from api.routes_jobs import SUBMIT_ERRORS
from api.schemas import InferRequest, InferResult, Problem
from api.service import elapsed_ms
from jobqueue import JobStatus

router = APIRouter(tags=["inference"])

TIMEOUT_RETRY_AFTER = 2.0

INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **SUBMIT_ERRORS,
    502: {"model": Problem, "description": "The job failed (the error is in `detail`)"},
    504: {"model": Problem, "description": "No result within the timeout; `id` and `url` fetch it later"},
}
INFER_ERRORS.pop(200)


@router.post("/infer", response_model=InferResult, responses=INFER_ERRORS, summary="Submit and wait")
async def infer(body: InferRequest, c: CallerDep) -> InferResult:
    """Run the prompt on MODEL_REF and return the output, waiting up to `timeout` (or INFER_TIMEOUT)."""
    service = c.service
    config = service.config
    with c.gate.slot():
        start = time.perf_counter()
        accepted = await service.submit(
            api_key=c.api_key, client_addr=c.addr, model=config.default_model, version=None, input=body.prompt
        )
        timeout = min(body.timeout or config.infer_timeout, config.infer_timeout)
        url = job_url(accepted.job_id)
        try:
            job = accepted.cached_job or await service.wait(accepted.job_id, timeout)
        except REDIS_UNAVAILABLE as exc:  # the job was accepted: say where it is, do not resubmit
            service.metrics.rejections.labels("redis_unavailable").inc()
            raise ApiError(
                503, "redis_unavailable",
                f"the job was accepted but Redis became unavailable while waiting ({type(exc).__name__}); "
                f"fetch it later at {url}", retry_after=REDIS_RETRY_AFTER, id=accepted.job_id, url=url,
            ) from exc  # fmt: skip
        if job is None or not job.status.terminal:
            service.metrics.rejections.labels("timeout").inc()
            raise ApiError(
                504, "timeout", f"no result within {timeout:g} s; the job continues: fetch it at {url}",
                retry_after=TIMEOUT_RETRY_AFTER, id=accepted.job_id, url=url,
            )  # fmt: skip
        if job.status is not JobStatus.SUCCEEDED:
            raise ApiError(
                502, "job_failed", f"job {job.id} {job.status.value}: {job.error or 'no error recorded'}",
                id=job.id, url=url, status=job.status.value,
            )  # fmt: skip
        return InferResult(
            id=job.id, modelRef=accepted.queue, prompt=body.prompt, routerPod=config.hostname,
            kvEndpoints=list(config.kv_endpoints), processingMs=elapsed_ms(start), output=job.output,
            cached=accepted.cached_job is not None,
        )  # fmt: skip
