"""Request-scoped helpers shared by the route modules: the service, the caller's key and address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from api.admission import ConcurrencyGate
from api.auth import API_KEY_HEADER
from api.schemas import JOB_ID_PATTERN
from api.service import JobService


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def get_gate(request: Request) -> ConcurrencyGate:
    gate: ConcurrencyGate = request.app.state.infer_gate
    return gate


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


Service = Annotated[JobService, Depends(get_service)]
ApiKey = Annotated[
    str | None, Header(alias=API_KEY_HEADER, description="API key (required when API_KEYS is set)")
]
Gate = Annotated[ConcurrencyGate, Depends(get_gate)]
ClientAddr = Annotated[str, Depends(client_addr)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Job id as returned on submission")]
