"""The versioned JSON API: submit (202 + Location), read, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import CallerDep, JobId, job_url
from api.schemas import JobAccepted, JobRequest, JobView, Problem

router = APIRouter(prefix="/v1", tags=["jobs"])

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key (when API_KEYS is set)"},
    403: {"model": Problem, "description": "The API key may not use this model"},
    503: {
        "model": Problem,
        "description": "Redis unreachable, or refusing commands for a while (loading, busy running a script, "
        "full, refusing writes); the detail says which; retry after Retry-After",
    },
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    200: {"model": JobAccepted, "description": "Answered from the result cache: the job already succeeded"},
    413: {"model": Problem, "description": "Body larger than MAX_BODY_BYTES"},
    422: {
        "model": Problem,
        "description": "Malformed request, unknown model or version, or an idempotency_key already "
        "used for a different request",
    },
    429: {"model": Problem, "description": "Overloaded (MAX_WAITING) or rate limited; see Retry-After"},
}


@router.post(
    "/jobs", status_code=202, response_model=JobAccepted, responses=SUBMIT_ERRORS,
    summary="Submit a job",
)  # fmt: skip
async def submit(body: JobRequest, c: CallerDep) -> Response:
    """Queue a job on `model:version` (the version is drawn from the traffic weights when omitted).
    Answered 202 only once the job is stored in Redis; fetch it at the Location URL."""
    # The hot path: the body is encoded here, once, instead of FastAPI validating the returned model
    # against `response_model` and serialising it again (which `response_model` still documents).
    accepted = await c.service.submit(
        api_key=c.api_key, client_addr=c.addr, model=body.model, version=body.version, input=body.input,
        priority=body.priority, idempotency_key=body.idempotency_key, metadata=body.metadata,
    )  # fmt: skip
    url = job_url(accepted.job_id)
    body_out = JobAccepted(
        id=accepted.job_id, url=url, status=accepted.status, queue=accepted.queue, created=accepted.created
    )
    return Response(
        body_out.model_dump_json(),
        status_code=200 if accepted.cached_job is not None else 202,
        headers={"Location": url},
        media_type="application/json",
    )


@router.get(
    "/jobs/{job_id}", response_model=JobView, summary="Get a job",
    responses={**COMMON_ERRORS, 404: {"model": Problem, "description": "No such job (or expired)"}},
)  # fmt: skip
async def get_job(job_id: JobId, c: CallerDep) -> JobView:
    """Status, output or error, attempts, and latency (queue wait, service, total)."""
    return JobView.of(await c.service.get(job_id, c.api_key))


@router.delete(
    "/jobs/{job_id}", response_model=JobView, summary="Cancel a queued job",
    responses={
        **COMMON_ERRORS,
        404: {"model": Problem, "description": "No such job (or expired)"},
        409: {"model": Problem, "description": "The job already started or finished"},
    },
)  # fmt: skip
async def cancel_job(job_id: JobId, c: CallerDep) -> JobView:
    """Cancel a job that no worker has started; workers skip it. 409 once it is running or done."""
    await c.service.cancel(job_id, c.api_key)
    return JobView.of(await c.service.get(job_id, c.api_key))
