"""JobClient against the real API and Valkey when things fail: Redis lost while a job is followed, a
gateway that loses the API's answer, a Retry-After longer than the client waits, a bad key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from api.client import ApiClientError, JobClient, RetryPolicy
from jobqueue import Keyspace
from tests.support.api import api_process
from tests.support.fakeapi import Answer, fake_api, html, js
from tests.support.valkey import ValkeyServer


def stop_once_queued(server: ValkeyServer, timeout: float = 10) -> threading.Thread:
    """Stop ``server`` as soon as the API has queued a job on it (the API is then waiting for it)."""

    def run() -> None:
        direct = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + timeout
        while not direct.get(Keyspace().queue("default:v1").arrivals) and time.monotonic() < deadline:
            time.sleep(0.02)
        direct.close()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_infer_keeps_the_job_id_when_redis_is_lost_while_it_is_followed(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """The API answers 503 naming the job ("do not resend it"); following it meets the same outage
    (503 "retry later"). That last error was raised: no job id, and a caller told to retry."""
    server = valkey_factory()
    with api_process(server.url, tmp_path) as api:  # no worker: the job stays queued
        stopper = stop_once_queued(server)
        retry = RetryPolicy(attempts=2, base=0.01)
        with JobClient(api.url, retry=retry) as client, pytest.raises(ApiClientError) as exc:
            client.infer("hello", timeout=10)
        stopper.join(10)
    assert exc.value.status == 503 and exc.value.body["id"], exc.value
    assert "do not resend" in exc.value.detail, exc.value
    cause = exc.value.__cause__
    assert isinstance(cause, ApiClientError) and cause.status == 503 and "id" not in cause.body


def test_a_retry_after_longer_than_the_client_waits_is_raised_at_once(redis_url: str, tmp_path: Path) -> None:
    """RATE_LIMIT=1/m asks for about a minute; the client cut that to max_retry_after (30 s) and
    resent early, to be refused again. The 429 is raised at once, with the API's Retry-After."""
    sleeps: list[float] = []
    with (
        api_process(redis_url, tmp_path, RATE_LIMIT="1/m") as api,
        JobClient(api.url, sleep=sleeps.append) as client,
    ):
        client.submit({"n": 0}, model="default")  # the bucket's one token
        with pytest.raises(ApiClientError) as exc:
            client.submit({"n": 1}, model="default")
    assert exc.value.status == 429 and exc.value.error == "rate_limited" and sleeps == []


def test_a_gateways_502_after_the_api_stored_the_job_does_not_lead_to_a_second_job(
    redis_url: str, tmp_path: Path
) -> None:
    """A gateway forwards the submission, the API stores the job, the gateway answers 502 (its
    upstream connection broke on the way back). The client neither retried it nor told the caller
    its generated key: the caller's resubmission created a second job. A keyed submission is now
    resent on 502/503/504 with the same key (the first job comes back), and when it fails for good
    the exception carries the key, with which a resubmission returns the same job."""
    created: list[str] = []
    with api_process(redis_url, tmp_path) as api, httpx.Client(base_url=api.url) as upstream:
        lose = {"answers": 1}

        def gateway(method: str, path: str, body: object) -> Answer:
            reply = upstream.request(method, path, json=body)
            if method == "POST" and reply.json().get("created"):
                created.append(reply.json()["id"])
            if method == "POST" and lose["answers"] > 0:
                lose["answers"] -= 1
                return html(502)  # the job is stored; its answer is lost on the way back
            return js(reply.status_code, reply.json())

        with fake_api(gateway) as (url, seen), JobClient(url, retry=RetryPolicy(base=0.01)) as client:
            job = client.submit({"image": "cat.jpg"}, model="default")
            assert job["created"] is False and [job["id"]] == created and len(seen) == 2
            lose["answers"] = 5  # every attempt's answer lost: the key comes with the error
            with pytest.raises(ApiClientError) as exc:
                client.submit({"image": "dog.jpg"}, model="default")
            assert exc.value.status == 502 and exc.value.idempotency_key
            again = client.submit(
                {"image": "dog.jpg"}, model="default", idempotency_key=exc.value.idempotency_key
            )
    assert again["created"] is False and created == [job["id"], again["id"]]


def test_an_empty_idempotency_key_is_refused_not_swapped_for_a_random_one(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """ "" was replaced by a random key, so each of a caller's retries with "its" key made a job."""
    with api_process(redis_url, tmp_path) as api, JobClient(api.url) as client:
        for _ in range(2):
            with pytest.raises(ValueError, match="idempotency_key"):
                client.submit("x", model="default", idempotency_key="")
        with api.http() as http:  # the API refuses it too
            r = http.post("/v1/jobs", json={"input": "x", "model": "default", "idempotency_key": ""})
        assert r.status_code == 422
        assert not redis_client.keys(Keyspace().job("*"))
