"""Probes, metrics and the routing table: what operators and Kubernetes look at."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from api.deps import CallerDep
from api.errors import REDIS_RETRY_AFTER, error_response, misconfigured_response
from api.metrics import CONTENT_TYPE
from api.schemas import ModelsView, Problem
from api.service import JobService
from jobqueue.errors import describe, misconfigured, transient

router = APIRouter(tags=["operations"])

READY_TIMEOUT = 1.0


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz() -> dict[str, str]:
    """Always 200 while the event loop runs: a Redis outage is no reason to restart the pod."""
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: Redis is reachable",
    responses={503: {"model": Problem, "description": "Redis unreachable"}},
)  # fmt: skip
async def readyz(request: Request) -> Response:
    """200 if Redis answers PING within a second; 503 otherwise, so no traffic is routed here."""
    service: JobService = request.app.state.service
    try:
        await asyncio.wait_for(service.ping(), READY_TIMEOUT)
    except TimeoutError:
        service.metrics.redis_up.set(0)
        detail = f"redis did not answer PING within {READY_TIMEOUT:g} s"
        return error_response(503, "redis_unavailable", detail, REDIS_RETRY_AFTER)
    except Exception as exc:
        if misconfigured(exc):  # not ready, and saying why: an operator has to fix REDIS_URL
            service.metrics.redis_up.set(0)
            return misconfigured_response(exc)
        if not transient(exc):
            raise
        service.metrics.redis_up.set(0)
        return error_response(503, "redis_unavailable", f"redis {describe(exc)}", REDIS_RETRY_AFTER)
    service.metrics.redis_up.set(1)
    return Response(b'{"status":"ready"}', media_type="application/json")


metrics_router = APIRouter(tags=["operations"])
"""``/metrics`` on the API's own port: included only when ``METRICS_PORT`` is ``PORT`` (otherwise
:mod:`api.metrics_server` serves it on its own port, and the API's port answers it 404)."""


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    service = request.app.state.service
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


@router.get(
    "/v1/models", response_model=ModelsView, tags=["jobs"], summary="Models and traffic weights",
    responses={401: {"model": Problem, "description": "Missing or unknown API key (when API_KEYS is set)"}},
)  # fmt: skip
async def models(c: CallerDep) -> ModelsView:
    """The models served, and the split unversioned requests follow (live weights included).
    Change the split live with `python -m api.traffic`."""
    c.service.auth.authenticate(c.api_key)
    r = c.service.router
    return ModelsView(default=c.service.config.model_ref, models=r.models(), traffic=r.effective())
