"""The Python client's retry policy and the API's Redis command packer, without any server."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from api.client import INFER_READ_CAP, ApiClientError, JobClient, JobTimeoutError, RetryPolicy
from api.redis_client import FastPackMixin, _fast
from tests.support.fakeapi import Answer, fake_api, html, js


def scripted(*responses: httpx.Response | Exception) -> tuple[JobClient, list[float], list[httpx.Request]]:
    """A client whose transport answers with ``responses`` in order; sleeps are recorded, not slept."""
    queue = list(responses)
    seen: list[httpx.Request] = []
    sleeps: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client = JobClient(
        "http://api", api_key="k", transport=httpx.MockTransport(handle), sleep=sleeps.append,
        rng=random.Random(1), retry=RetryPolicy(attempts=4, base=0.1, cap=1.0),
    )  # fmt: skip
    return client, sleeps, seen


def ok(body: dict[str, Any], status: int = 202) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_retries_429_and_503_honouring_retry_after_with_one_idempotency_key() -> None:
    client, sleeps, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "rate_limited"}),
        httpx.Response(503, json={"error": "redis_unavailable"}),
        httpx.ConnectError("refused"),
        ok({"id": "j1"}),
    )
    assert client.submit("x", model="m")["id"] == "j1"
    assert 3 <= sleeps[0] <= 3.1  # Retry-After plus a little jitter
    assert 0.1 <= sleeps[1] <= 0.2 and 0.2 <= sleeps[2] <= 0.4  # exponential, jittered in [0.5, 1]
    keys = {r.read() for r in seen}
    assert len(keys) == 1  # the same body, so the same idempotency key, on every attempt
    assert all(r.headers["X-API-Key"] == "k" for r in seen)


def test_gives_up_after_attempts_and_does_not_retry_client_errors() -> None:
    client, sleeps, _ = scripted(
        *[httpx.Response(503, json={"error": "redis_unavailable", "detail": "d"})] * 4
    )
    with pytest.raises(ApiClientError) as exc:
        client.get("j1")
    assert exc.value.status == 503 and len(sleeps) == 3
    client, sleeps, _ = scripted(httpx.Response(422, json={"error": "invalid_request", "detail": "body.x"}))
    with pytest.raises(ApiClientError, match=r"HTTP 422 invalid_request: body\.x"):
        client.submit(1, model="m")
    assert sleeps == []
    client, _, _ = scripted(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(httpx.ConnectError):
        client.get("j1")


def test_a_submission_that_fails_for_good_carries_its_idempotency_key() -> None:
    """The generated key was lost with the error: a caller's resubmission could only make a new job."""
    client, _, seen = scripted(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(httpx.ConnectError) as exc:
        client.submit("x", model="m")
    sent = {json.loads(r.read())["idempotency_key"] for r in seen}
    assert len(seen) == 4 and sent == {getattr(exc.value, "idempotency_key", None)}


def test_a_503_for_refused_redis_credentials_is_not_retried() -> None:
    """Redis refusing the server's password lasts until an operator acts: no resend, no back-off."""
    refused = {"error": "redis_misconfigured", "detail": "the job store (Redis) refused the credentials"}
    assert_sent_once_and_raised(httpx.Response(503, json=refused))


def assert_sent_once_and_raised(response: httpx.Response) -> None:
    """Each call (submit, get, infer) answered ``response`` raises at once: one request, no sleep."""
    for call in ("submit", "get", "infer"):
        client, sleeps, seen = scripted(*[response] * 4)
        with pytest.raises(ApiClientError) as exc:
            if call == "submit":
                client.submit("x", model="m")
            elif call == "get":
                client.get("j1")
            else:
                client.infer("p")
        assert (exc.value.status, len(seen), sleeps) == (response.status_code, 1, []), call


def test_a_429_for_too_many_failed_authentications_is_not_retried() -> None:
    """The client's own key is missing or unknown: after the Retry-After the same request would only
    get the 401, so waiting and resending is time lost (and counts against its address again)."""
    refused = {"error": "too_many_auth_failures", "detail": "unknown API key; too many requests from ..."}
    assert_sent_once_and_raised(httpx.Response(429, headers={"Retry-After": "6"}, json=refused))


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=0.1, cap=1.0, max_retry_after=10)
    rng = random.Random(3)
    delays = [policy.delay(n, None, rng) for n in range(10)]
    assert all(0.05 <= d <= 1.0 for d in delays) and max(delays) > 0.5
    assert 100 <= policy.delay(0, 100, rng) <= 100.1  # at least what Retry-After asks


def test_a_retry_policy_without_a_try_is_refused() -> None:
    """attempts=0 was accepted, then every call raised AssertionError('unreachable'), sending nothing."""
    for attempts in (0, -1):
        with pytest.raises(ValueError, match="attempts"):
            RetryPolicy(attempts=attempts)
    client, sleeps, seen = scripted(httpx.Response(503, json={"error": "redis_unavailable", "detail": "d"}))
    client.retry = RetryPolicy(attempts=1)
    with pytest.raises(ApiClientError):
        client.get("j1")  # one try, no retry
    assert len(seen) == 1 and sleeps == []


def test_a_retry_after_longer_than_the_client_waits_is_raised_not_resent_early() -> None:
    """Retry-After above max_retry_after was cut to it and the request resent before the server
    asked: the docs promise at least Retry-After. The refusal is raised instead."""
    refusal = {"error": "rate_limited", "detail": "d"}
    client, sleeps, seen = scripted(httpx.Response(429, headers={"Retry-After": "31"}, json=refusal))
    with pytest.raises(ApiClientError) as exc:
        client.submit("x", model="m")
    assert exc.value.status == 429 and sleeps == [] and len(seen) == 1
    client, sleeps, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "30"}, json=refusal), ok({"id": "j1"})
    )
    assert client.submit("x", model="m")["id"] == "j1" and 30 <= sleeps[0] <= 30.1


def test_wait_polls_until_terminal_and_times_out() -> None:
    client, sleeps, _ = scripted(
        ok({"status": "queued"}, 200), ok({"status": "running"}, 200), ok({"status": "succeeded"}, 200)
    )
    assert client.wait("j1", timeout=10)["status"] == "succeeded"
    assert sleeps == [0.1, 0.2]
    client, _, _ = scripted(ok({"status": "queued"}, 200))
    with pytest.raises(JobTimeoutError) as exc:
        client.wait("j1", timeout=0)
    assert exc.value.job_id == "j1"


def test_a_wait_timeout_names_the_job_and_its_last_status() -> None:
    """It read 'HTTP 504 None: ' (the job record's ``error`` field, None): no job, no status, and a
    504 no server sent."""
    job = {"id": "j1", "status": "running", "error": None, "output": None}
    with (
        fake_api(lambda m, p, b: js(200, job)) as (url, _),
        JobClient(url) as client,
        pytest.raises(JobTimeoutError) as exc,
    ):
        client.wait("j1", timeout=0.2)
    assert str(exc.value) == "job j1 did not finish in time (last status: running)"
    assert (exc.value.job_id, exc.value.error, exc.value.body) == ("j1", "timeout", job)


def test_infer_504_without_time_left_raises_with_the_job_id() -> None:
    client, _, _ = scripted(
        httpx.Response(504, json={"error": "timeout", "detail": "d", "id": "j9", "url": "/v1/jobs/j9"})
    )
    with pytest.raises(JobTimeoutError) as exc:
        client.infer("p")
    assert exc.value.job_id == "j9"


def test_infer_504_for_a_submission_never_stored_is_a_timeout_not_a_404() -> None:
    """The deadline can strike while the submission is in flight: the 504 names an id that may not
    exist; following it must end as a timeout, not as a 404 about a job the caller never named."""
    timed_out = {"error": "timeout", "detail": "submission", "id": "j7", "url": "/v1/jobs/j7"}
    client, _, seen = scripted(
        httpx.Response(504, json=timed_out), httpx.Response(404, json={"error": "not_found", "detail": "d"})
    )
    with pytest.raises(JobTimeoutError) as exc:
        client.infer("p", timeout=30)
    assert exc.value.job_id == "j7" and exc.value.body == timed_out
    assert [r.url.path for r in seen] == ["/infer", "/v1/jobs/j7"]


def test_infer_is_not_resent_once_the_server_may_have_queued_it() -> None:
    """/infer takes no idempotency key: a resend after a read timeout or a dropped connection queued
    the prompt again (the retry policy resent it up to ``attempts`` times). A refused connection
    never reached the server and is still retried."""
    for error in (httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed")):
        client, sleeps, seen = scripted(error, ok({"id": "j2", "output": "o"}, 200))
        with pytest.raises(type(error)):
            client.infer("p", timeout=30)
        assert [r.url.path for r in seen] == ["/infer"] and sleeps == []
    client, _, seen = scripted(httpx.ConnectError("refused"), ok({"id": "j2", "output": "o"}, 200))
    assert client.infer("p", timeout=30)["id"] == "j2" and len(seen) == 2


def test_infer_without_a_timeout_outwaits_the_servers_deadline() -> None:
    """Without ``timeout`` the server answers by its INFER_TIMEOUT (30 s by default): the client gave
    up at its own HTTP timeout + 5 s (15 s by default) and resubmitted, a job per attempt."""
    client, _, seen = scripted(ok({"id": "j3", "output": "o"}, 200))
    client.infer("p")
    assert seen[0].extensions["timeout"]["read"] == INFER_READ_CAP > 3600
    client, _, seen = scripted(ok({"id": "j3", "output": "o"}, 200))
    client.infer("p", timeout=30)
    assert seen[0].extensions["timeout"]["read"] == 35


def test_infer_503_for_an_accepted_job_follows_it_instead_of_resubmitting() -> None:
    """A 503 naming the job (Redis failed while the API waited) means it was queued: resending the
    prompt queued a second one."""
    accepted = {"error": "redis_unavailable", "detail": "d", "id": "j4", "url": "/v1/jobs/j4"}
    client, _, seen = scripted(
        httpx.Response(503, json=accepted), ok({"status": "succeeded", "output": "o"}, 200)
    )
    assert client.infer("p", timeout=30) == {"id": "j4", "prompt": "p", "output": "o", "followed": True}
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/infer"), ("GET", "/v1/jobs/j4")]
    client, _, seen = scripted(  # without ``timeout`` too: the server's deadline had not passed
        httpx.Response(503, json=accepted), ok({"status": "succeeded", "output": "o"}, 200)
    )
    assert client.infer("p")["followed"] is True
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/infer"), ("GET", "/v1/jobs/j4")]


def test_infer_resends_only_a_503_that_says_nothing_was_queued() -> None:
    """A 503 without ``"queued": false`` may come after the job was written (a proxy's 503 when its
    upstream connection broke, or an API that did not say): it was resent, queueing the prompt again."""
    for refusal in (
        httpx.Response(503, json={"error": "redis_unavailable", "detail": "d"}),
        httpx.Response(503, text="upstream connect error or disconnect/reset before headers"),
    ):
        client, sleeps, seen = scripted(refusal, ok({"id": "j5", "output": "o"}, 200))
        with pytest.raises(ApiClientError) as exc:
            client.infer("p", timeout=30)
        assert exc.value.status == 503 and [r.url.path for r in seen] == ["/infer"] and sleeps == []
    unstored = {"error": "redis_unavailable", "detail": "d", "queued": False}
    client, sleeps, seen = scripted(
        httpx.Response(503, headers={"Retry-After": "2"}, json=unstored),
        httpx.Response(429, json={"error": "rate_limited", "detail": "d"}),
        ok({"id": "j5", "output": "o"}, 200),
    )
    assert client.infer("p", timeout=30)["id"] == "j5"
    assert [r.url.path for r in seen] == ["/infer"] * 3 and 2 <= sleeps[0] <= 2.1


def test_infer_503_naming_a_job_never_stored_raises_the_503() -> None:
    """The write's reply was an error: the 503 names a job that may not exist. Following it to a 404
    ended as a timeout (504) although nothing timed out; the refusal is the answer."""
    unknown = {"error": "redis_unavailable", "detail": "busy", "id": "j6", "url": "/v1/jobs/j6"}
    client, _, seen = scripted(
        httpx.Response(503, json=unknown), httpx.Response(404, json={"error": "not_found", "detail": "d"})
    )
    with pytest.raises(ApiClientError) as exc:
        client.infer("p", timeout=30)
    assert not isinstance(exc.value, JobTimeoutError)
    assert exc.value.status == 503 and exc.value.body == unknown
    assert [r.url.path for r in seen] == ["/infer", "/v1/jobs/j6"]


NAMING = {
    503: {"error": "redis_unavailable", "detail": "the job was queued ...; do not resend it: fetch it later",
          "id": "jX", "url": "/v1/jobs/jX", "queued": True},
    504: {"error": "timeout", "detail": "no result within 1 s; the job continues",
          "id": "jX", "url": "/v1/jobs/jX"},
}  # fmt: skip
FOLLOW_FAILURES: dict[str, Answer] = {
    "503 retry later": js(
        503, {"error": "redis_unavailable", "detail": "retry later"}, **{"Retry-After": "1"}
    ),
    "proxy's 502": html(502),
}


@pytest.mark.parametrize("status", sorted(NAMING))
@pytest.mark.parametrize("failure", sorted(FOLLOW_FAILURES))
def test_infer_whose_follow_fails_raises_the_answer_that_named_the_job(status: int, failure: str) -> None:
    """The follow's own error ("retry later", a proxy's page) was raised: no job id, an invitation
    to resend a prompt that was already queued."""

    def route(method: str, path: str, body: object) -> Answer:
        return (
            js(status, NAMING[status], **{"Retry-After": "2"})
            if path == "/infer"
            else FOLLOW_FAILURES[failure]
        )

    retry = RetryPolicy(attempts=2, base=0.01)
    with (
        fake_api(route) as (url, seen),
        JobClient(url, retry=retry) as client,
        pytest.raises(ApiClientError) as exc,
    ):
        client.infer("p", timeout=30)
    assert (exc.value.status, exc.value.body) == (status, NAMING[status])
    assert isinstance(exc.value, JobTimeoutError) == (status == 504)
    assert isinstance(exc.value.__cause__, ApiClientError) and exc.value.__cause__.status != 404
    assert [m for m, _, _ in seen].count("POST") == 1


def test_infer_whose_follow_cannot_connect_raises_the_answer_that_named_the_job() -> None:
    client, _, _ = scripted(httpx.Response(503, json=NAMING[503]), *[httpx.ConnectError("refused")] * 4)
    with pytest.raises(ApiClientError) as exc:
        client.infer("p", timeout=30)
    assert exc.value.body["id"] == "jX" and isinstance(exc.value.__cause__, httpx.ConnectError)


def test_a_proxys_504_without_a_job_is_not_a_job_timeout() -> None:
    """A gateway's own 504 (its read timeout) names no job: it was a JobTimeoutError with job_id ''."""
    page = "<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"
    with (
        fake_api(lambda m, p, b: html(504, page)) as (url, seen),
        JobClient(url) as client,
        pytest.raises(ApiClientError) as exc,
    ):
        client.infer("p", timeout=120)
    assert type(exc.value) is ApiClientError and exc.value.status == 504 and exc.value.body == page
    assert [p for _, p, _ in seen] == ["/infer"]


QUEUED = {"id": "j1", "status": "queued", "error": None}
DOWN = js(503, {"error": "redis_unavailable", "detail": "retry later"}, **{"Retry-After": "2"})


@pytest.mark.parametrize("failure", ["hang", "503"])
def test_wait_ends_by_its_timeout_when_the_api_hangs_or_refuses(failure: str) -> None:
    """Each poll ran the whole retry loop, with full read timeouts and Retry-After: wait(timeout=1)
    took 10 s and more, and ended with httpx.ReadTimeout or a 503 instead of JobTimeoutError."""
    polls: list[str] = []

    def route(method: str, path: str, body: object) -> Answer:
        polls.append(path)
        return js(200, QUEUED) if len(polls) == 1 else (None if failure == "hang" else DOWN)

    with fake_api(route) as (url, _), JobClient(url, timeout=10) as client:
        start = time.monotonic()
        with pytest.raises(JobTimeoutError) as exc:
            client.wait("j1", timeout=1)
        took = time.monotonic() - start
    assert took < 1.8, f"wait(timeout=1) took {took:.1f} s"
    assert exc.value.job_id == "j1" and "last status: queued" in str(exc.value)
    cause = httpx.ReadTimeout if failure == "hang" else ApiClientError
    assert isinstance(exc.value.__cause__, cause)


def test_infer_follows_a_job_only_until_its_timeout() -> None:
    def route(method: str, path: str, body: object) -> Answer:
        return js(503, NAMING[503], **{"Retry-After": "2"}) if path == "/infer" else None

    with fake_api(route) as (url, _), JobClient(url) as client:
        start = time.monotonic()
        with pytest.raises(JobTimeoutError) as exc:
            client.infer("p", timeout=1)
        took = time.monotonic() - start
    assert took < 1.8 and exc.value.job_id == "jX", f"{took:.1f} s: {exc.value}"


UNSTORED = {
    429: {"error": "too_many_requests", "detail": "64 synchronous requests already in flight"},
    503: {"error": "redis_unavailable", "detail": "nothing was queued", "queued": False},
}


@pytest.mark.parametrize("status", sorted(UNSTORED))
def test_infer_resends_a_refusal_only_while_its_retry_after_fits_in_the_timeout(status: int) -> None:
    """Resends of a 429 / 503 queued:false ignored ``timeout``: infer(timeout=1.5) slept through
    Retry-After four times. Now the refusal is raised when the wait would leave less than the
    second the API needs."""
    refuse = js(status, UNSTORED[status], **{"Retry-After": "2"})
    slept: list[float] = []
    with (
        fake_api(lambda m, p, b: refuse) as (url, seen),
        JobClient(url, sleep=slept.append) as client,
        pytest.raises(ApiClientError) as exc,
    ):
        client.infer("p", timeout=1.5)
    assert exc.value.status == status and len(seen) == 1 and slept == []


def test_an_infer_resend_asks_only_for_the_time_left() -> None:
    """Each resend carried the caller's whole ``timeout`` again, so the server could wait all of it anew."""
    answers = [js(429, UNSTORED[429], **{"Retry-After": "1"}), js(200, {"id": "j", "output": "o"})]
    with fake_api(lambda m, p, b: answers.pop(0)) as (url, seen), JobClient(url) as client:
        assert client.infer("p", timeout=3)["output"] == "o"
    first, second = seen[0][2]["timeout"], seen[1][2]["timeout"]
    assert first == 3 and 1.5 < second <= 3 - 1, (first, second)


args = st.lists(
    st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers(), st.floats(allow_nan=False)),
    max_size=50,
)


@given(st.sampled_from(["EVALSHA", "HSET", "CONFIG GET", b"XINFO GROUPS"]), args)
def test_fast_packer_sends_the_same_bytes_as_redis_py(command: str | bytes, rest: list[Any]) -> None:
    plain = Connection()
    fast = _fast(Connection)()
    assert isinstance(fast, FastPackMixin)
    assert b"".join(fast.pack_command(command, *rest)) == b"".join(plain.pack_command(command, *rest))
