"""Request-scoped helpers shared by the route modules: who is calling, and the app's service.

One ``async`` dependency per endpoint, on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread (a thread hop per request), and each extra dependency costs a resolution step; both
showed up at the top of the submission hot path's profile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

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


async def checked_key(request: Request, model: str | None = None) -> str | None:
    """The request's API key once it is known to be valid (401), and allowed on ``model`` if given
    (403): what a route that takes a body asks before it reads it (see :class:`KeyFirstRoute`)."""
    api_key = await api_key_header(request)
    auth = request.app.state.service.auth
    if model is None:
        auth.authenticate(api_key)
    else:
        auth.authorize(api_key, model)
    return api_key


class KeyFirstRoute(APIRoute):
    """A submission route whose caller's API key is checked before FastAPI reads, parses and
    validates the request (body, query): an unauthenticated client is answered 401 (403 for a key
    that may not use ``MODEL_REF``'s model, where every request of the route goes) at the cost of a
    header read. FastAPI reads the body before it resolves any dependency, so a wrong key with a
    1 MiB JSON body cost the parse and the validation of the whole body before its 401, and the
    rate limit, keyed by the authenticated key, never saw it. The route's OpenAPI operation and its
    answers to valid requests are FastAPI's; the service checks the key again (a dictionary-sized
    constant-time compare), as every route does."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            await checked_key(request, request.app.state.service.router.default_model)
            return await handle(request)

        return handler


FREE_FORM = ("input", "output", "metadata")
"""The fields of a job's views that hold what clients and models sent, as they sent it."""


def rendered(model: BaseModel, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``model`` (a view of a job) as the JSON response, whatever its job holds.

    Pydantic's serializer stops at ~250 levels of nesting (``Maximum serialization depth
    exceeded``): a job whose input, output or metadata nests that deep (stored before submissions
    were capped at :data:`api.schemas.MAX_DEPTH`, or a model's output) was a 500 on every read.
    Those fields are then written by Python's JSON encoder, which goes as deep as the decoder that
    read them from the job record went; the rest of the view is pydantic's as always."""
    try:
        body = model.model_dump_json()
    except PydanticSerializationError:
        free = {name for name in FREE_FORM if name in type(model).model_fields}
        plain = model.model_dump(mode="json", exclude=free)
        fields = {
            name: getattr(model, name) if name in free else plain[name] for name in type(model).model_fields
        }
        body = json.dumps(fields, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


CallerDep = Annotated[Caller, Depends(caller)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Job id as returned on submission")]
