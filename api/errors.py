"""One error shape for every refusal, and the mapping from failures to HTTP statuses.

Every error body is ``{"error": <machine code>, "detail": <sentence for a human>, ...extra}``, so
clients branch on ``error`` and people read ``detail``. Refusals a client should retry (overload,
rate limit, Redis unavailable, sync timeout) carry ``Retry-After``. Redis being unreachable, or in a
state that refuses commands for a while (loading, busy running a script, full, refusing writes
because its persistence failed: :func:`jobqueue.errors.transient`), is an expected operating
condition, answered 503 naming the state, with advice that fits the endpoint, never a 500 with a
traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from api.metrics import ApiMetrics
from jobqueue.errors import describe, misconfigured, remedy, transient

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER = 2


class SubmissionUnknownError(Exception):
    """The write of a submission failed after it was sent (a transient Redis error): the job may or
    may not be stored. Raised by the service so that an endpoint that named the job before the write
    (``/infer``) can say so; any other endpoint answers the usual 503 for ``cause``."""

    def __init__(self, job_id: str, cause: redis.exceptions.RedisError) -> None:
        super().__init__(f"job {job_id}: {type(cause).__name__}: {cause}")
        self.job_id = job_id
        self.cause = cause


def retry_advice(method: str, path: str) -> str:
    """How to retry a request that failed because Redis was unavailable, for this endpoint.

    Only ``POST /v1/jobs`` takes an idempotency key; a resubmission to ``/push`` or ``/infer`` after
    a failure that struck once the job was stored (a lost reply) queues it a second time, and the
    client should know. Reads, and cancelling (idempotent), can simply be retried.
    """
    if method == "POST" and path == "/v1/jobs":
        return (
            "retry later, resubmitting with the same idempotency_key (send one: it makes a retry "
            "return the job if the first attempt stored it)"
        )
    if method == "POST" and path in ("/push", "/infer"):
        return (
            "retry later; this endpoint takes no idempotency key, so if the job was stored before the "
            "failure a retry queues it again (POST /v1/jobs with an idempotency_key retries safely)"
        )
    return "retry later"


def redis_failure_response(exc: BaseException, method: str, path: str) -> Response | None:
    """The 503 for a Redis failure a later retry may fix (:func:`jobqueue.errors.transient`: down,
    loading, busy with a script, full, refusing writes...), saying which, with advice for the
    endpoint (``path`` is the route's template); the answer of :func:`misconfigured_response` for
    credentials Redis refused; None for any other exception."""
    if misconfigured(exc):
        return misconfigured_response(exc)
    if not transient(exc):
        return None
    detail = f"the job store (Redis) {describe(exc)}; {retry_advice(method, path)}"
    return error_response(503, "redis_unavailable", detail, REDIS_RETRY_AFTER)


def misconfiguration_detail(exc: BaseException) -> str:
    return (
        f"the job store (Redis) {describe(exc)}: this API server is misconfigured, not overloaded; "
        f"its operator must {remedy(exc)}; nothing was stored, and resending will fail the same way "
        "until then"
    )


def misconfigured_response(exc: BaseException) -> Response:
    """The answer when Redis refuses the API's credentials, ACL user or database (wrong password,
    NOAUTH, WRONGPASS, NOPERM, a database it lacks: :func:`jobqueue.errors.misconfigured`). Still
    a 503 (the service cannot serve), but ``redis_misconfigured`` with no ``Retry-After`` and never
    ``queued: false``: the client is not invited to resend as after an outage
    (:class:`api.client.JobClient` does not), and the detail says what the operator must fix. The
    refusal comes at connection time, before any command ran, so nothing was stored."""
    return error_response(503, "redis_misconfigured", misconfiguration_detail(exc))


class ApiError(Exception):
    """A refusal with its status; ``reason`` labels the rejection metric (None: not counted)."""

    def __init__(
        self,
        http_status: int,
        error: str,
        detail: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = http_status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after
        self.reason = reason
        self.headers = headers
        self.extra = extra


def error_response(
    http_status: int,
    error: str,
    detail: str,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = json.dumps({"error": error, "detail": detail, **extra}, separators=(",", ":"))
    return Response(body, status_code=http_status, headers=headers, media_type="application/json")


def describe_validation(
    errors: Sequence[Any], content_type: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors as one readable sentence plus a compact list: ``body.priority: Input
    should be 'normal' or 'high'``. Inputs are left out of the list (they may be large or secret).

    ``content_type`` is the request's: FastAPI reads a body as JSON only under a JSON type (or
    none), and validates any other as raw bytes, which fail as "Input should be a valid
    dictionary" even when they are one. That is what ``curl -d`` without ``-H`` sends (form
    encoded), so the message names the header to fix instead."""
    items = []
    for err in errors:
        if err.get("type") == "json_invalid":  # the location is a byte offset, not a field
            why = (err.get("ctx") or {}).get("error", "")
            items.append({"loc": "body", "msg": f"not valid JSON ({why})" if why else "not valid JSON"})
            continue
        if tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes):
            sent = f"Content-Type {content_type[:100]!r}" if content_type else "a non-JSON Content-Type"
            msg = f"not read as JSON: it was sent with {sent}; send it with Content-Type: application/json"
            items.append({"loc": "body", "msg": msg})
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()))
        items.append({"loc": loc, "msg": str(err.get("msg", "invalid"))})
    sentence = "; ".join(f"{i['loc']}: {i['msg']}" if i["loc"] else i["msg"] for i in items)
    return sentence or "invalid request", items


def unparsable_body(cause: BaseException | None) -> str | None:
    """What is wrong with a body FastAPI could not read as JSON for a reason other than a syntax
    error, which it answers with a bare 400 "There was an error parsing the body": bytes that are
    not UTF-8 (a client encoding its text as Latin-1, as Windows PowerShell 5.1 does), or nesting
    deeper than Python's JSON parser goes, or an integer literal longer than Python converts
    (``sys.get_int_max_str_digits``, 4300 digits by default). Each is malformed input, a 422 that
    says so; None for any other cause (left as it was)."""
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset {cause.start}); "
            "send the JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply (arrays and objects may nest a few hundred levels at most)"
    if isinstance(cause, ValueError):  # json's syntax errors are a 422 already: this is int()'s limit
        return f"a number in it is too long (integers may have at most {sys.get_int_max_str_digits()} digits)"
    return None


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods :func:`allowed_methods` asks about (the app serves no other)."""


def allowed_methods(request: Request) -> str:
    """The methods the app serves on the request's path, sorted: a 405's ``Allow`` (RFC 9110).

    Starlette's 405 comes from the first route whose path matches and names that route's methods
    alone: ``/v1/jobs/{id}`` said ``Allow: GET`` though DELETE is served there too, by another
    route. Each method is tried against the app's routes as the router dispatches a request (a
    route that fully matches serves it), so the answer holds however the routes are split or nested
    (FastAPI keeps included routers nested), and names HEAD only where it is really served."""
    path, root_path = request.scope["path"], request.scope.get("root_path", "")
    served = []
    for method in METHODS:
        probe = {"type": "http", "path": path, "root_path": root_path, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            served.append(method)
    return ", ".join(sorted(served))


def install_error_handlers(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        if exc.reason:
            metrics.rejections.labels(exc.reason).inc()
        return error_response(exc.status, exc.error, exc.detail, exc.retry_after, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        metrics.rejections.labels("invalid").inc()
        sentence, items = describe_validation(exc.errors(), request.headers.get("content-type"))
        return error_response(422, "invalid_request", sentence, errors=items)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and (why := unparsable_body(exc.__cause__)):
            metrics.rejections.labels("invalid").inc()
            detail, items = f"body: {why}", [{"loc": "body", "msg": why}]
            return error_response(422, "invalid_request", detail, errors=items)
        names = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        error = names.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405 and (allowed := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}  # every route's methods, not the first's
        return error_response(exc.status_code, error, str(exc.detail), headers=headers)

    async def _redis_down(request: Request, exc: Exception) -> Response:
        cause = exc.cause if isinstance(exc, SubmissionUnknownError) else exc
        route = request.scope.get("route")
        response = redis_failure_response(cause, request.method, getattr(route, "path", request.url.path))
        if response is None:  # another command error (WRONGTYPE, ...): a bug, answered by _unexpected
            raise exc
        if misconfigured(cause):
            log.error(
                "redis refused this server's configuration (%s: %s): %s",
                type(cause).__name__,
                cause,
                remedy(cause),
            )
            return response
        metrics.rejections.labels("redis_unavailable").inc()
        log.warning("redis unavailable: %s: %s", type(cause).__name__, cause)
        return response

    # Every Redis error: the transient ones are answered here, any other is re-raised (a 500).
    for exc_type in (redis.exceptions.RedisError, SubmissionUnknownError):
        app.add_exception_handler(exc_type, _redis_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        """A bug: logged with its traceback by the server; the client gets the usual error shape."""
        return error_response(500, "internal_error", "unexpected error; it has been logged")
