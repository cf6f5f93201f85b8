"""Request-scoped helpers shared by the route modules: who is calling, and the app's service.

One ``async`` dependency per endpoint, on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread (a thread hop per request), and each extra dependency costs a resolution step; both
showed up at the top of the submission hot path's profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader

from api.admission import ConcurrencyGate
from api.auth import API_KEY_HEADER
from api.schemas import JOB_ID_PATTERN
from api.service import JobService


@dataclass(frozen=True, slots=True)
class Caller:
    service: JobService
    api_key: str | None
    addr: str

    @property
    def gate(self) -> ConcurrencyGate:
        return self.service.infer_gate


api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="API key (required when API_KEYS is set)"
)
"""Reads the header and declares it in OpenAPI as a security scheme; the Authenticator decides."""


async def caller(request: Request, api_key: Annotated[str | None, Security(api_key_header)]) -> Caller:
    service: JobService = request.app.state.service
    addr = request.client.host if request.client else "unknown"
    return Caller(service, api_key, addr)


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


CallerDep = Annotated[Caller, Depends(caller)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Job id as returned on submission")]
