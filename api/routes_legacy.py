"""The seed project's endpoints, kept so its clients keep working: ``/push``, ``/status``, ``/data``.

``/push`` submits to ``MODEL_REF`` with the query string as the input (a JSON string).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import CallerDep, JobId, KeyFirstRoute, rendered
from api.routes_jobs import COMMON_ERRORS, SUBMIT_ERRORS
from api.schemas import LegacyData, LegacyPushed, LegacyStatus, Problem, latency_of

router = APIRouter(tags=["legacy"])
NOT_FOUND = {**COMMON_ERRORS, 404: {"model": Problem, "description": "No such job (or expired)"}}


async def push(
    input: Annotated[str, Query(max_length=65536, description="The job's input")],
    response: Response,
    c: CallerDep,
) -> LegacyPushed:
    accepted = await c.service.submit(
        api_key=c.api_key, client_addr=c.addr, model=c.service.router.default_model, version=None, input=input
    )
    response.headers["Location"] = f"/status/{accepted.job_id}"
    return LegacyPushed(id=accepted.job_id)


router.add_api_route(
    "/push", push, methods=["POST"], response_model=LegacyPushed, responses=SUBMIT_ERRORS,
    summary="Submit (seed API)", route_class_override=KeyFirstRoute,  # the key before the query
)  # fmt: skip


@router.get("/status/{job_id}", response_model=LegacyStatus, responses=NOT_FOUND, summary="Status (seed API)")
async def status(job_id: JobId, c: CallerDep) -> LegacyStatus:
    job = await c.service.get(job_id, c.api_key)
    return LegacyStatus(
        id=job.id, status=job.status, attempts=job.attempts, worker=job.worker, error=job.error
    )


@router.get(
    "/data/{job_id}", response_model=LegacyData, summary="Output and latency (seed API)",
    responses={**NOT_FOUND, 202: {"model": LegacyData, "description": "Not finished; see Retry-After"}},
)  # fmt: skip
async def data(job_id: JobId, c: CallerDep) -> Response:
    """The output plus queue wait, service and total latency; 202 while the job is not finished."""
    job = await c.service.get(job_id, c.api_key)
    view = LegacyData(
        id=job.id, status=job.status, output=job.output, error=job.error, latency=latency_of(job)
    )
    if not job.status.terminal:
        return rendered(view, 202, {"Retry-After": "1"})
    return rendered(view)
