"""The versioned JSON API: submit (202 + Location), read, cancel.

``POST /v1/jobs`` is the hot path, and FastAPI's generic request handling (resolving the
dependencies, deciding how to read the body, validating it as a body field) cost more CPU than
the rest of the request's Python. :class:`SubmitRoute` takes a shorter way for the request that
almost every client sends, a body of valid JSON with ``Content-Type: application/json`` that
validates as a :class:`JobRequest`: the same JSON parser and model, the same API key header and
caller, the same endpoint function. Any other request (another or no content type, a body that
does not parse or validate, an error reading it) is left to FastAPI's handler, which reads the
body the first attempt kept and answers exactly as it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.deps import CallerDep, JobId, caller, checked_key, job_url, rendered
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


class SubmitRoute(APIRoute):
    """The submission route: FastAPI's handler behind a shortcut for a plain JSON body (see the
    module docstring). Its OpenAPI operation is the one FastAPI derives from :func:`submit`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            # The key first (401), before a byte of the body is read: an unauthenticated client
            # must not get the body parsed and validated (see :class:`api.deps.KeyFirstRoute`; the
            # model, hence a 403, is known only from the body).
            api_key = await checked_key(request)
            body = await plain_body(request)
            if body is None:
                return await handle(request)
            return await submit(body, await caller(request, api_key))

        return handler


async def plain_body(request: Request) -> JobRequest | None:
    """The request's body as a :class:`JobRequest` if it is plain JSON that validates, else None.

    What FastAPI does for such a request: ``request.json()`` (Python's parser, kept on the request,
    so a fallback does not read or parse twice), then the model's validation. A request this does
    not take costs the fallback nothing but the attempt."""
    if request.headers.get("content-type") != "application/json":
        return None
    try:
        return JobRequest.model_validate(await request.json())
    except HTTPException:  # raised while reading the body (413 from the body limit): as FastAPI does
        raise
    except Exception:  # unparsable, invalid or not received: FastAPI answers it
        return None


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


router.add_api_route(
    "/jobs", submit, methods=["POST"], status_code=202, response_model=JobAccepted,
    responses=SUBMIT_ERRORS, summary="Submit a job", route_class_override=SubmitRoute,
)  # fmt: skip


@router.get(
    "/jobs/{job_id}", response_model=JobView, summary="Get a job",
    responses={**COMMON_ERRORS, 404: {"model": Problem, "description": "No such job (or expired)"}},
)  # fmt: skip
async def get_job(job_id: JobId, c: CallerDep) -> Response:
    """Status, output or error, attempts, and latency (queue wait, service, total)."""
    return rendered(JobView.of(await c.service.get(job_id, c.api_key)))


@router.delete(
    "/jobs/{job_id}", response_model=JobView, summary="Cancel a queued job",
    responses={
        **COMMON_ERRORS,
        404: {"model": Problem, "description": "No such job (or expired)"},
        409: {"model": Problem, "description": "The job already started or finished"},
    },
)  # fmt: skip
async def cancel_job(job_id: JobId, c: CallerDep) -> Response:
    """Cancel a job that no worker has started; workers skip it. 409 once it is running or done."""
    await c.service.cancel(job_id, c.api_key)
    return rendered(JobView.of(await c.service.get(job_id, c.api_key)))
