"""A small Python client for the job API, with retries that are safe to make.

Retries: on 429 (overloaded, rate limited), 503 (Redis unavailable) and connection errors, with
exponential back-off and jitter (so a fleet of clients refused together does not come back together),
waiting at least what ``Retry-After`` asks (a refusal asking for more than
``RetryPolicy.max_retry_after`` is raised, not resent early). ``wait`` and ``infer`` keep to their
``timeout``: polls and resends are cut to the time left. Submissions carry an idempotency key
(generated unless given), so a retry after a lost answer returns the first job instead of creating
a second.
``/infer`` takes no key, so it is resent only when the server cannot have queued it yet: a refused
connection, a 429, or a 503 whose body says ``"queued": false``. Never after a read timeout or a
dropped connection, and never after any other 503 (a proxy's, or one naming the job). A 503
``redis_misconfigured`` (Redis refused the server's credentials) is never retried: it lasts until an
operator fixes the server's configuration, so it is returned (raised) at once; so is a 429
``too_many_auth_failures`` (the client's API key is missing or unknown: waiting does not fix it).

    with JobClient("http://api:8000", api_key="...") as api:
        job = api.submit({"image": "s3://..."}, model="resnet")
        done = api.wait(job["id"], timeout=60)
        print(api.infer("hello")["output"])
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from jobqueue.backoff import backoff_delay

RETRY_STATUSES = frozenset({429, 503})

KEYED_RETRY_STATUSES = frozenset({502, 503, 504})
"""Retried too for a submission, which carries an idempotency key: a gateway's 502 or 504 may come
after the API stored the job, and resending with the same key returns that job, never a second."""

UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request reached the server: resending cannot repeat it."""

LAST_POLL = 0.5
"""Time limit of a poll sent when :meth:`JobClient.wait`'s deadline has (nearly) passed: the last
look at the job, which may have just finished, overruns the deadline by this much at most."""

MIN_INFER_TIMEOUT = 1.0
"""The least ``timeout`` the API accepts on ``/infer``: a resend that would leave less is not made."""

INFER_READ_CAP = 3605.0
"""Read timeout of an ``infer`` without ``timeout``: the server answers by its own INFER_TIMEOUT,
which this client does not know, so it waits an hour plus slack (against a server whose
INFER_TIMEOUT is longer, pass ``timeout``); finite, so a server that hangs without closing the
connection cannot block forever."""


class ApiClientError(Exception):
    """The API refused or failed a request (after retries, if it was retryable)."""

    idempotency_key: str | None = None
    """The key of the submission that failed (set by :meth:`JobClient.submit`): resend with it."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error") or "") if isinstance(body, dict) else ""
        self.detail = body.get("detail", "") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status} {self.error}: {self.detail}")


class JobTimeoutError(ApiClientError):
    """The job did not finish in time; ``job_id`` is still valid and can be fetched later.

    ``body`` is the server's 504 that said so (``infer``), or with ``polled`` the job's last record
    as :meth:`JobClient.wait` read it (None if no poll answered in time): the message then names
    the job and its last status, and claims no HTTP 504 (``status`` is 504 all the same, a timeout)."""

    def __init__(self, job_id: str, body: Any, *, polled: bool = False) -> None:
        super().__init__(504, body)
        self.job_id = job_id
        if polled:
            last = body.get("status") if isinstance(body, dict) else None
            self.error = "timeout"
            self.detail = f"job {job_id} did not finish in time (last status: {last or 'unknown'})"
            self.args = (self.detail,)


class _OutOfTimeError(Exception):
    """A deadline stopped a request's retries: ``error`` is the refusal or failure it ended on."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1 or more); the n-th back-off is ``min(cap, base * 2**n)`` scaled by
    a random factor in [0.5, 1] ("equal jitter"), or ``Retry-After`` plus up to ``base`` of jitter
    when the server sent one. A refusal whose ``Retry-After`` exceeds ``max_retry_after`` is not
    retried but returned (raised): resending sooner than asked would only be refused again."""

    attempts: int = 5
    base: float = 0.1
    cap: float = 5.0
    max_retry_after: float = 30.0
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(
                f"RetryPolicy.attempts must be at least 1 (one try, no retry), not {self.attempts}"
            )

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return retry_after + rng.uniform(0, self.base)
        return backoff_delay(attempt, self.base, self.cap, rng)


def _unstored(response: httpx.Response) -> bool:
    """Whether the server says this refusal came before anything was stored, so that resending a
    request without an idempotency key cannot queue it twice: every 429 of this API (admission:
    concurrency, rate limit, backlog, all checked before the write), and a 503 whose body says
    ``"queued": false``. Not a bare 503: ``/infer`` answers 503 after the job was queued too (Redis
    failed while it waited, or as the write's reply came back), and a proxy in front of the API
    answers 503 when its upstream connection broke, perhaps after the request reached the API."""
    if response.status_code == 429:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("queued") is False


LASTING_ERRORS = frozenset({"redis_misconfigured", "too_many_auth_failures"})
"""Refusals a resend cannot turn into an answer: the server cannot serve until its operator fixes its
configuration (``redis_misconfigured``), or this client's own API key is missing or unknown and its
address sent too many such requests (``too_many_auth_failures``, a 429: after its ``Retry-After`` the
same request would only get the 401 it stands for)."""


def _lasting(response: httpx.Response) -> bool:
    """Whether the server's refusal is one of :data:`LASTING_ERRORS`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") in LASTING_ERRORS


def _job_named(response: httpx.Response) -> str:
    """The job id an error body names (``/infer``'s 503 and 504 for an accepted job), else ''."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("id") or "") if isinstance(body, dict) else ""


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error(response: httpx.Response) -> ApiClientError:
    return ApiClientError(response.status_code, _body(response))


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:  # an HTTP date: not sent by this API; fall back to back-off
        return None


@dataclass
class JobClient:
    base_url: str
    api_key: str | None = None
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self.transport
        )

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, resend: bool = True, **kwargs: Any) -> httpx.Response:
        """Send with retries; returns the last response (any status) or raises the last
        connection error once attempts are exhausted.

        ``resend=False`` is for a request that is not safe to repeat once the server may have
        acted on it (``/infer`` takes no idempotency key): a transport error after it was sent
        (read timeout, dropped connection) is raised at once, since resending it would queue the
        job again; only errors raised before it left (:data:`UNSENT`) are retried, and only the
        refusals the server says came before anything was stored (see :func:`_unstored`). A
        refusal that names a job (``id`` in its body: the job may exist) is never resent either way.
        A refusal whose ``Retry-After`` exceeds ``retry.max_retry_after`` is returned, not resent."""
        return self._send(method, path, resend=resend, **kwargs)

    def _send(
        self,
        method: str,
        path: str,
        *,
        resend: bool = True,
        statuses: frozenset[int] = frozenset(),
        deadline: float | None = None,
        needs: float = 0.0,
        bound: Callable[[float], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """:meth:`request`, retrying ``statuses`` besides ``retry.statuses``, and with ``deadline``
        (a :func:`time.monotonic` time) within it: ``bound(time left)`` gives each retry's
        arguments that depend on it (its time limits, ``/infer``'s ``timeout``; the first attempt's
        are the caller's); a retry is made only if its delay leaves ``needs`` seconds before the
        deadline; a transport error once the deadline has passed is not retried. When the deadline
        stops it, raises :class:`_OutOfTimeError` with the refusal (as :class:`ApiClientError`) or
        error it ended on."""
        retried = self.retry.statuses | statuses
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            if deadline is not None and bound is not None and attempt > 0:
                kwargs.update(bound(deadline - time.monotonic()))
            failure: Exception
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _OutOfTimeError(exc) from exc
                if last or not (resend or isinstance(exc, UNSENT)):
                    raise
                failure, wait = exc, self.retry.delay(attempt, None, self.rng)
            else:
                if response.status_code not in retried or last or _job_named(response):
                    return response
                if _lasting(response) or not (resend or _unstored(response)):
                    return response
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > self.retry.max_retry_after:
                    return response  # it asks for longer than this client waits: the refusal stands
                failure, wait = _error(response), self.retry.delay(attempt, retry_after, self.rng)
            if deadline is not None and time.monotonic() + wait + needs > deadline:
                raise _OutOfTimeError(failure) from failure
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, response: httpx.Response, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        if response.status_code not in ok:
            raise _error(response)
        return _body(response)

    def submit(
        self,
        input: Any,
        model: str,
        *,
        version: str | None = None,
        priority: str = "normal",
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit a job; returns ``{"id", "url", "status", "queue", "created"}``.

        The request carries ``idempotency_key`` (a random one unless given; ``""`` is refused with
        :class:`ValueError`, as the API would), so it is retried on a gateway's 502 or 504 too
        (:data:`KEYED_RETRY_STATUSES`). If it fails all the same, the exception raised
        (:class:`ApiClientError` or ``httpx.TransportError``) carries the key as ``idempotency_key``:
        submitting again with it returns the job if the lost attempt created one."""
        if idempotency_key == "":
            raise ValueError("idempotency_key must be 1-128 characters (None: a random one)")
        key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
        body: dict[str, Any] = {
            "input": input,
            "model": model,
            "priority": priority,
            "idempotency_key": key,
            "metadata": dict(metadata or {}),
        }
        if version is not None:
            body["version"] = version
        try:
            result: dict[str, Any] = self._json(
                self._send("POST", "/v1/jobs", statuses=KEYED_RETRY_STATUSES, json=body)
            )
        except ApiClientError as exc:
            exc.idempotency_key = key
            raise
        except httpx.TransportError as exc:
            exc.idempotency_key = key  # type: ignore[attr-defined]
            raise
        return result

    def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.request("GET", f"/v1/jobs/{job_id}"))
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job; raises :class:`ApiClientError` 409 if it already started."""
        result: dict[str, Any] = self._json(self.request("DELETE", f"/v1/jobs/{job_id}"))
        return result

    def wait(self, job_id: str, timeout: float, poll: float = 0.1, poll_max: float = 2.0) -> dict[str, Any]:
        """Poll until the job is finished (succeeded, failed, cancelled or dead) or ``timeout``
        passes (:class:`JobTimeoutError`, naming the job and its last status). The deadline bounds
        every poll too: its time limits are cut to the time left (:data:`LAST_POLL` at least) and
        a retry (of a 503, a 429 or a connection error) is made only if its delay ends before the
        deadline; when it does not, or a poll times out at the deadline, the wait ends with
        :class:`JobTimeoutError`, the poll's failure as its ``__cause__``. A poll that fails for
        good before the deadline (attempts exhausted, a 404) raises that failure."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] | None = None
        while True:
            try:
                limits = self._poll_limits(deadline - time.monotonic())
                response = self._send(
                    "GET", f"/v1/jobs/{job_id}", deadline=deadline, bound=self._poll_limits, **limits
                )
            except _OutOfTimeError as exc:
                raise JobTimeoutError(job_id, job, polled=True) from exc.error
            job = self._json(response)
            if job["status"] not in ("queued", "running"):
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeoutError(job_id, job, polled=True)
            self.sleep(min(poll, left))
            poll = min(poll * 2, poll_max)

    def _poll_limits(self, left: float) -> dict[str, Any]:
        return {"timeout": min(self.timeout, max(left, LAST_POLL))}

    def infer(self, prompt: str, timeout: float | None = None) -> dict[str, Any]:
        """Synchronous inference. If the server times out (504), the job keeps running: this
        follows it by id for the rest of ``timeout`` instead of submitting it again (without
        ``timeout`` the server's own deadline has passed: :class:`JobTimeoutError` at once). A 503
        naming the job (Redis failed after the write was sent) is followed too, for the rest of
        ``timeout`` or, without one, up to :data:`INFER_READ_CAP` from the start (the server's
        deadline, which this client does not know, had not passed). A 504 for a submission that
        did not complete names a job that may not exist: if it does not (404),
        :class:`JobTimeoutError` as for any timeout; a 503's job that does not exist raises that
        503. If following fails otherwise (Redis still down, a proxy's error, the API unreachable),
        the 503 or 504 that named the job is raised, the failure as its ``__cause__``: the job may
        exist, so resending could queue it twice. A 504 that names no job (a proxy's own) is a
        plain :class:`ApiClientError`.

        The request is never resent once it may have reached the server (see :meth:`request`):
        each resend would queue the prompt again. Refusals are resent only when the server says
        nothing was stored (a 429, or a 503 with ``"queued": false``); any other 503 is raised. So
        the read waits for the server's answer, which comes by its deadline (``timeout``, or its
        ``INFER_TIMEOUT`` when none is given, which this client does not know: up to
        :data:`INFER_READ_CAP` then) rather than giving up before it."""
        start = time.monotonic()

        def limits(left: float) -> dict[str, Any]:  # each send asks for the time left, not all of it
            sent = min(timeout, round(left, 3)) if timeout is not None else None
            body = {"prompt": prompt} if sent is None else {"prompt": prompt, "timeout": sent}
            read = INFER_READ_CAP if sent is None else sent + 5
            return {"json": body, "timeout": httpx.Timeout(self.timeout, read=read)}

        deadline = None if timeout is None else start + timeout
        try:
            response = self._send(
                "POST", "/infer", resend=False, deadline=deadline, needs=MIN_INFER_TIMEOUT,
                bound=limits, **limits(INFER_READ_CAP),
            )  # fmt: skip
        except _OutOfTimeError as exc:  # a refusal whose Retry-After does not fit: it is the answer
            raise exc.error from None
        job_id = _job_named(response) if response.status_code in (503, 504) else ""
        if not job_id:  # a proxy's own 504 names no job: nothing to follow, no JobTimeoutError
            result: dict[str, Any] = self._json(response, ok=(200,))
            return result
        body = self._json(response, ok=(response.status_code,))
        refusal = ApiClientError(503, body) if response.status_code == 503 else JobTimeoutError(job_id, body)
        if response.status_code == 504 and timeout is None:  # the server's own deadline has passed
            raise refusal
        left = (INFER_READ_CAP if timeout is None else timeout) - (time.monotonic() - start)
        if left <= 0:
            raise refusal
        try:
            job = self.wait(job_id, left)
        except JobTimeoutError:
            raise
        except (ApiClientError, httpx.TransportError) as exc:
            # No such job (404): a 503's refusal stands, a 504's submission never completed in time.
            # Any other failure (Redis still down, a proxy's 502, the API unreachable): the job may
            # exist, so the error raised names it, never inviting a resend.
            raise refusal from exc
        if job["status"] != "succeeded":
            raise ApiClientError(502, {"error": "job_failed", "detail": job.get("error") or job["status"]})
        return {"id": job_id, "prompt": prompt, "output": job["output"], "followed": True}
