"""The job API in process (TestClient, lifespan included) against a real Valkey server.

Worker behaviour is played with the protocol's own consumer operations (fetch/start/finish) where a
test needs a job to be running or finished at a precise moment; tests that need real workers are in
test_api_e2e.py and test_api_infer.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from jobqueue import JobStatus, Keyspace, Settings
from jobqueue import sync as jq
from jobqueue.binding import bind_sync
from jobqueue.consumer import Outcome
from jobqueue.scripts import SUBMIT
from jobqueue.traffic import set_traffic
from tests.support.api import api_client
from tests.support.proxy import ReplyDropper
from tests.support.valkey import ValkeyServer
from tests.support.workers import REPO

pytestmark = pytest.mark.integration

Q = "default:v1"


def submit(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/jobs", json={"input": "x", "model": "default", **body})


def arrivals(r: redis.Redis, queue: str = Q) -> int:
    return int(r.get(Keyspace().queue(queue).arrivals) or 0)


def take_and_start(r: redis.Redis, queue: str = Q, worker: str = "w1") -> Any:
    """What a worker does: the next runnable entry, started (cancelled ones are skipped)."""
    for _ in range(10):
        [entry] = jq.fetch(r, queue, worker, block_ms=50)
        if jq.start(r, entry, worker).job is not None:
            return entry
    raise AssertionError("no runnable entry")


def finish(r: redis.Redis, entry: Any, output: Any, worker: str = "w1") -> None:
    assert jq.finish(r, entry, worker, Outcome.SUCCEEDED, output, 0.01) is JobStatus.SUCCEEDED


def test_submit_get_and_seed_endpoints(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url) as c:
        r = submit(c, metadata={"user": "u1"}, priority="high")
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["Location"] == body["url"] == f"/v1/jobs/{body['id']}"
        assert (body["status"], body["queue"], body["created"]) == ("queued", Q, True)
        job = c.get(body["url"]).json()
        assert (job["status"], job["priority"], job["metadata"], job["input"]) == (
            "queued",
            "high",
            {"user": "u1"},
            "x",
        )
        assert job["latency"] == {"queue_wait_ms": None, "service_ms": None, "total_ms": None}

        pushed = c.post("/push", params={"input": "hello"})
        assert pushed.status_code == 200 and set(pushed.json()) == {"id"}
        pid = pushed.json()["id"]
        assert c.get(f"/status/{pid}").json()["status"] == "queued"
        pending = c.get(f"/data/{pid}")
        assert pending.status_code == 202 and pending.headers["Retry-After"] == "1"

        take_and_start(r := redis_client)  # the high-priority /v1/jobs submission comes first
        entry = take_and_start(r)
        assert entry.job_id == pid
        finish(r, entry, {"output": "ok"})
        data = c.get(f"/data/{pid}")
        assert data.status_code == 200
        d = data.json()
        assert d["output"] == {"output": "ok"} and d["status"] == "succeeded"
        lat = d["latency"]
        assert lat["total_ms"] == pytest.approx(lat["queue_wait_ms"] + lat["service_ms"], abs=0.01)
        assert c.get(f"/v1/jobs/{body['id']}").json()["status"] == "running"


def test_idempotency_key_returns_the_first_job(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url) as c:
        first = submit(c, idempotency_key="order-42", input={"a": 1, "b": 2}).json()
        again = submit(c, idempotency_key="order-42", input={"b": 2, "a": 1}).json()  # same request
        other = submit(c, idempotency_key="order-43").json()
        take_and_start(redis_client)  # order-42's job runs: a retry now says so
        running = submit(c, idempotency_key="order-42", input={"a": 1, "b": 2}).json()
    assert again["id"] == first["id"] and (first["created"], again["created"]) == (True, False)
    assert (first["status"], again["status"], running["status"]) == ("queued", "queued", "running")
    assert other["id"] != first["id"]
    assert arrivals(redis_client) == 2


@pytest.mark.parametrize("key", [None, "order-42"], ids=["no-key", "idempotency-key"])
def test_the_request_whose_write_redis_py_resent_is_told_it_created_the_job(
    redis_client: redis.Redis, key: str | None
) -> None:
    """The job is written, the reply is lost with its connection, and the API's Redis client
    reconnects and resends the script by itself (one retry). The resend met the job just written
    (its key's record, or its id) and the client that created it was told ``created: false``,
    counted as a duplicate. The client's own retry with the key is the duplicate, and says so."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.script_load(SUBMIT.source)  # so the dropped reply is the script's, not NOSCRIPT
    with ReplyDropper(port) as proxy, api_client(proxy.url) as c:
        proxy.drop_reply_to(SUBMIT.sha.encode())
        first = submit(c, idempotency_key=key)
        assert proxy.dropped.is_set()
        metrics = c.get("/metrics").text
        again = submit(c, idempotency_key="order-42").json() if key else None
    assert first.status_code == 202, first.text
    assert (first.json()["created"], first.json()["status"]) == (True, "queued")
    assert 'api_submissions_total{outcome="created",queue="default:v1"} 1.0' in metrics
    assert 'outcome="duplicate"' not in metrics
    if again is not None:
        assert (again["id"], again["created"]) == (first.json()["id"], False)
    assert arrivals(redis_client) == 1


def test_an_idempotency_key_reused_for_another_request_is_422(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with api_client(redis_url) as c:
        first = submit(c, idempotency_key="order-42").json()
        # Any difference in what the client sent, naming the version it was routed to included.
        for change in ({"input": "y"}, {"priority": "high"}, {"metadata": {"a": 1}}, {"version": "v1"}):
            r = submit(c, idempotency_key="order-42", **change)
            assert r.status_code == 422, (change, r.text)
            assert r.json()["error"] == "idempotency_key_reused"
            assert "'order-42' was already used for a different request" in r.json()["detail"]
        retry = submit(c, idempotency_key="order-42").json()
        metrics = c.get("/metrics").text
    assert (retry["id"], retry["created"]) == (first["id"], False)
    assert arrivals(redis_client) == 1  # nothing refused was queued
    assert 'api_rejections_total{reason="invalid"} 4.0' in metrics


def test_idempotency_keys_are_scoped_to_the_api_key(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url, API_KEYS="tenant-key-aaa=*,tenant-key-bbb=*") as c:

        def submit_as(key: str, input: str) -> Any:
            body = {"input": input, "model": "default", "idempotency_key": "order-1"}
            return c.post("/v1/jobs", json=body, headers={"X-API-Key": key})

        a = submit_as("tenant-key-aaa", "a").json()
        b = submit_as("tenant-key-bbb", "b").json()
        assert a["created"] and b["created"] and a["id"] != b["id"]  # neither sees the other's job
        again = submit_as("tenant-key-aaa", "a").json()
        assert (again["id"], again["created"]) == (a["id"], False)
        assert submit_as("tenant-key-bbb", "a").json()["error"] == "idempotency_key_reused"
    names = [name.decode() for name in redis_client.scan_iter("*")]
    records = [n for n in names if ":idem" in n]
    assert len(records) == 2 and all(":idem-by:" in n for n in records), records
    assert not any("tenant-key" in n for n in names)  # the secret never names a key
    assert arrivals(redis_client) == 2


def test_unversioned_retries_with_a_key_find_their_job_across_the_split(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with api_client(redis_url, TRAFFIC_WEIGHTS="resnet:v1=50,resnet:v2=50") as c:
        first = [submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in range(20)]
        again = [submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in range(20)]
    assert {f["queue"] for f in first} == {"resnet:v1", "resnet:v2"}
    assert [(a["id"], a["queue"], a["created"]) for a in again] == [
        (f["id"], f["queue"], False) for f in first
    ]


def test_a_retry_with_a_key_finds_its_job_after_the_split_moves(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The key is remembered on the version the split chose; once the split moved (a canary ramp,
    a rollback), the retry was routed by the new weights to the other version, where the key is
    unknown, and queued the job a second time."""
    with api_client(redis_url, TRAFFIC_WEIGHTS="resnet:v1=50,resnet:v2=50") as c:
        first = [submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in range(20)]
        assert {f["queue"] for f in first} == {"resnet:v1", "resnet:v2"}
        go_live(c, redis_client, "resnet", {"v1": 0, "v2": 100})
        again = [submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in range(20)]
        fresh = submit(c, model="resnet", input="new", idempotency_key="k-new").json()
    assert [(a["id"], a["queue"], a["created"]) for a in again] == [
        (f["id"], f["queue"], False) for f in first
    ]
    assert fresh["queue"] == "resnet:v2" and fresh["created"]  # new keys follow the new split
    assert sum(arrivals(redis_client, q) for q in ("resnet:v1", "resnet:v2")) == 21


def test_a_retry_finds_its_job_on_a_version_rolled_out_of_the_split(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A canary set live and then rolled back as docs/api.md shows (``set default v1=100``): v2 is
    no longer a version the router knows, and the retry of a request the canary took was queued
    a second time, on v1. Every queue of the model ever used is asked for the key."""
    with api_client(redis_url) as c:  # MODEL_REF default:v1, no configured split
        go_live(c, redis_client, "default", {"v1": 50, "v2": 50})
        first = [submit(c, input=i, idempotency_key=f"k{i}").json() for i in range(20)]
        on_v2 = [(i, f) for i, f in enumerate(first) if f["queue"] == "default:v2"]
        assert 0 < len(on_v2) < 20
        go_live(c, redis_client, "default", {"v1": 100})
        again = [submit(c, input=i, idempotency_key=f"k{i}").json() for i, _ in on_v2]
        fresh = submit(c, input="new", idempotency_key="k-new").json()
    assert [(a["id"], a["queue"], a["created"]) for a in again] == [
        (f["id"], f["queue"], False) for _, f in on_v2
    ]
    assert fresh["queue"] == "default:v1" and fresh["created"]
    assert sum(arrivals(redis_client, q) for q in ("default:v1", "default:v2")) == 21


def go_live(c: TestClient, r: redis.Redis, model: str, split: dict[str, float]) -> None:
    """Set ``model``'s live traffic split and wait until the API routes by it."""
    bind_sync(set_traffic)(r, model, split)
    want = {version: float(weight) for version, weight in split.items()}
    deadline = time.monotonic() + 5
    while c.get("/v1/models").json()["traffic"].get(model) != want:
        assert time.monotonic() < deadline, "live weights not picked up"
        time.sleep(0.05)


def wait_gone(c: TestClient, *urls: str) -> None:
    """Until every job at ``urls`` has expired (GET answers 404)."""
    deadline = time.monotonic() + 5
    while any(c.get(url).status_code != 404 for url in urls):
        assert time.monotonic() < deadline, "the jobs did not expire"
        time.sleep(0.05)


def test_a_retry_whose_job_expired_queues_it_again(redis_url: str, redis_client: redis.Redis) -> None:
    """RESULT_TTL (1 s) shorter than IDEMPOTENCY_TTL (a day): the key's record outlived its job, and a
    retry got ``created: false`` with the id of a job that answered 404. A key is now forgotten with
    its job, so the retry is a new request: a new job that exists."""
    with api_client(redis_url, RESULT_TTL="1") as c:
        first = submit(c, idempotency_key="order-42").json()
        assert c.delete(first["url"]).json()["status"] == "cancelled"  # kept RESULT_TTL from now
        wait_gone(c, first["url"])
        retry = submit(c, idempotency_key="order-42")
        again = submit(c, idempotency_key="order-42").json()
        assert retry.status_code == 202, retry.text
        assert retry.json()["created"] and retry.json()["id"] != first["id"]
        assert c.get(retry.json()["url"]).json()["status"] == "queued"
    assert (again["id"], again["created"]) == (retry.json()["id"], False)  # the key names the new job
    assert arrivals(redis_client) == 2


def test_a_retry_whose_job_expired_follows_the_split(redis_url: str, redis_client: redis.Redis) -> None:
    """A retry goes to the version that remembers its key, even once the split moved away from it
    (see the test above); not when the key's job is gone: the key is forgotten there, and the job
    would be queued again on a version the split no longer sends anything to (e.g. rolled back)."""
    with api_client(redis_url, RESULT_TTL="1", TRAFFIC_WEIGHTS="resnet:v1=50,resnet:v2=50") as c:
        first = {i: submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in range(20)}
        on_v1 = {i: f for i, f in first.items() if f["queue"] == "resnet:v1"}
        assert 0 < len(on_v1) < 20
        go_live(c, redis_client, "resnet", {"v1": 0, "v2": 100})  # v1 rolled back
        for f in on_v1.values():
            c.delete(f["url"])
        wait_gone(c, *(f["url"] for f in on_v1.values()))
        again = [submit(c, model="resnet", input=i, idempotency_key=f"k{i}").json() for i in on_v1]
    assert all(a["created"] and a["queue"] == "resnet:v2" for a in again), again


def test_an_unknown_version_is_422_and_queues_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    queues = Keyspace().queues
    with api_client(redis_url, TRAFFIC_WEIGHTS="resnet:v1=100,resnet:v2=0") as c:
        named = submit(c, model="resnet", version="v2")  # weight 0: addressable by name
        assert named.status_code == 202 and named.json()["queue"] == "resnet:v2"
        before = redis_client.smembers(queues)
        for model, version, known in [("resnet", "v3", ["v1", "v2"]), ("default", "made-up-7", ["v1"])]:
            r = submit(c, model=model, version=version, idempotency_key="k")
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["error"] == "unknown_version" and body["known_versions"] == known
            assert f"version {version!r} of model {model!r} is not served here" in body["detail"]
    assert redis_client.smembers(queues) == before == {b"resnet:v2"}  # the watched set did not grow
    assert redis_client.keys("jq:q:resnet:v3*") == [] and redis_client.keys("jq:q:default:*") == []


def test_cancel_queued_then_conflict_when_running_or_finished(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with api_client(redis_url) as c:
        queued = submit(c).json()["id"]
        cancelled = c.delete(f"/v1/jobs/{queued}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert c.delete(f"/v1/jobs/{queued}").status_code == 200  # idempotent

        running = submit(c).json()["id"]
        entry = take_and_start(redis_client)  # skips the cancelled job's entry
        assert entry.job_id == running
        conflict = c.delete(f"/v1/jobs/{running}")
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"] == "not_cancellable" and conflict.json()["status"] == "running"
        finish(redis_client, entry, "done")
        assert c.delete(f"/v1/jobs/{running}").json()["status"] == "succeeded"
        assert c.get(f"/v1/jobs/{running}").json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/jobs/{id}"), ("DELETE", "/v1/jobs/{id}"), ("GET", "/status/{id}"), ("GET", "/data/{id}")],
)
def test_unknown_id_is_404(redis_url: str, method: str, path: str) -> None:
    with api_client(redis_url) as c:
        r = c.request(method, path.format(id="0123456789abcdef"))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found" and "0123456789abcdef" in r.json()["detail"]


BAD_BODIES: list[tuple[dict[str, Any] | str, str]] = [
    ({"model": "default"}, "body.input: Field required"),
    (
        {"input": 1, "model": "default", "priority": "urgent"},
        "body.priority: Input should be 'normal' or 'high'",
    ),
    ({"input": 1, "model": "default", "priorty": "high"}, "body.priorty: Extra inputs are not permitted"),
    ({"input": 1}, "body.model: Field required"),
    ({"input": 1, "model": "bad model"}, "body.model: String should match pattern"),
    ({"input": 1, "model": "default", "version": "v 1"}, "body.version: String should match pattern"),
    ({"input": 1, "model": "default", "metadata": [1]}, "body.metadata: Input should be a valid dictionary"),
    ({"input": 1, "model": "default", "idempotency_key": "k" * 200}, "body.idempotency_key: String should"),
    ({"input": 1, "model": "nope"}, "model 'nope' is not served here; known models: default"),
    ({"input": 1, "model": "default", "version": "v2"}, "version 'v2' of model 'default' is not served"),
    # JSON the parser reads but the job store could not write back (NaN, 1e400 read as infinity,
    # a lone surrogate escape): refused up front, never a 500 or a job whose every read fails.
    ('{"input": NaN, "model": "default"}', "body.input: Value error, numbers must be finite"),
    ('{"input": [1e400], "model": "default"}', "body.input: Value error, numbers must be finite"),
    ('{"input": 1, "model": "default", "metadata": {"a": -Infinity}}', "body.metadata: Value error, numbers"),
    ('{"input": "a\\ud800b", "model": "default"}', "body.input: Value error, strings must be valid Unicode"),
    ('{"input": 1, "model": "default", "metadata": {"\\udc00": 1}}', "body.metadata: Value error, strings"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_each_bad_submission_gets_a_clear_422(
    redis_url: str, redis_client: redis.Redis, body: dict[str, Any] | str, message: str
) -> None:
    with api_client(redis_url) as c:
        if isinstance(body, str):  # raw text: JSON that json= could not produce
            r = c.post("/v1/jobs", content=body.encode(), headers={"content-type": "application/json"})
        else:
            r = c.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert arrivals(redis_client) == 0


def test_malformed_requests_outside_the_json_body(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url, MAX_BODY_BYTES="1024") as c:
        broken = c.post("/v1/jobs", content=b'{"input": ', headers={"content-type": "application/json"})
        assert broken.status_code == 422 and broken.json()["detail"].startswith("body: not valid JSON")
        no_input = c.post("/push")
        assert no_input.status_code == 422 and "query.input: Field required" in no_input.json()["detail"]
        bad_id = c.get("/v1/jobs/not an id!")
        assert bad_id.status_code == 422 and "path.job_id" in bad_id.json()["detail"]
        big = c.post("/v1/jobs", json={"input": "x" * 2000, "model": "default"})
        assert big.status_code == 413 and big.json()["error"] == "body_too_large"

        def chunks() -> Any:
            yield b'{"input": "'
            for _ in range(20):
                yield b"y" * 100
            yield b'", "model": "default"}'

        chunked = c.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert c.get("/nowhere").json()["error"] == "not_found"
        wrong_method = c.put("/v1/jobs")  # RFC 9110: a 405 names the methods the path allows
        assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
        assert wrong_method.headers["allow"] == "POST"
        assert c.post("/healthz").headers["allow"] == "GET"  # FastAPI's routes do not serve HEAD
        assert c.post("/docs").headers["allow"] == "GET, HEAD"  # Starlette's (the docs page) do
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="too_large"} 2.0' in metrics
    assert arrivals(redis_client) == 0  # nothing refused was queued


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH"])
def test_a_405_on_a_job_url_lists_every_method_served_there(redis_url: str, method: str) -> None:
    """GET and DELETE on /v1/jobs/{id} are two routes; Starlette answered a 405 from the first whose
    path matches, so ``Allow`` said GET but not DELETE."""
    with api_client(redis_url) as c:
        url = c.post("/v1/jobs", json={"input": 1, "model": "default"}).json()["url"]
        r = c.request(method, url)
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed", r.text
        assert r.headers["allow"] == "DELETE, GET"
        assert c.head(url).headers["allow"] == "DELETE, GET"  # HEAD is not served here either
        assert c.delete(url).status_code == 200


def test_a_body_not_read_as_json_is_a_422_that_says_why(redis_url: str, redis_client: redis.Redis) -> None:
    """Bodies FastAPI's JSON parsing turns away for something other than a syntax error were a bare
    400 "There was an error parsing the body" (invalid UTF-8, e.g. Latin-1 text; nesting past
    Python's recursion limit), or a 422 saying a dictionary was not a dictionary (valid JSON sent
    with a non-JSON Content-Type, as ``curl -d`` does). Each is a 422 naming the cause."""
    job = b'{"input": "x", "model": "default"}'
    cases = [
        (b'{"input": "caf\xe9", "model": "default"}', "application/json", "not valid UTF-8 (byte 0xe9"),
        (b'{"input": ' + b"[" * 2000 + b"]" * 2000 + b', "model": "default"}', None, "nested too deeply"),
        (b'{"input": ' + b"9" * 5000 + b', "model": "default"}', None, "too long (integers may have at most"),
        (job, "application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'; send"),
        (job, "text/plain", "Content-Type 'text/plain'; send it with Content-Type: application/json"),
    ]
    with api_client(redis_url) as c:
        for body, content_type, message in cases:
            for path in ("/v1/jobs", "/infer"):
                r = c.post(path, content=body, headers={"content-type": content_type or "application/json"})
                assert r.status_code == 422, (path, r.text)
                assert r.json()["error"] == "invalid_request" and message in r.json()["detail"], r.text
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="invalid"} 10.0' in metrics
    assert arrivals(redis_client) == 0


def test_high_priority_is_served_first(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url) as c:
        normal = [submit(c, input=i).json()["id"] for i in range(3)]
        high = submit(c, input="vip", priority="high").json()["id"]
    order = [take_and_start(redis_client).job_id for _ in range(4)]
    assert order == [high, *normal]


def test_circuit_breaker_refuses_above_max_waiting(redis_url: str, redis_client: redis.Redis) -> None:
    # Reads 1 s apart: none lands amid the burst (a read racing a submission may count it twice,
    # on the refusing side, until the next read; exact counts keep this test deterministic)
    with api_client(redis_url, MAX_WAITING="5", STATS_REFRESH_SECONDS="1") as c:
        codes = [submit(c, input=i).status_code for i in range(8)]
        assert codes == [202] * 5 + [429] * 3
        refused = submit(c)
        assert refused.json()["error"] == "overloaded" and int(refused.headers["Retry-After"]) >= 1
        assert c.post("/push", params={"input": "x"}).status_code == 429  # every submission path
        for _ in range(3):  # workers take three jobs: two waiting, the breaker closes after a read
            finish(redis_client, take_and_start(redis_client), "ok")
        deadline = time.monotonic() + 5
        while 'api_queue_waiting_jobs{queue="default:v1"} 2.0' not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "backlog not re-read"
            time.sleep(0.02)
        assert submit(c).status_code == 202
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="overloaded"} 5.0' in metrics
    assert 'api_queue_waiting_jobs{queue="default:v1"}' in metrics
    assert arrivals(redis_client) == 6


@pytest.mark.parametrize("cache_ttl", ["0", "60"])
def test_the_retry_of_an_accepted_job_gets_it_while_its_queue_is_full(
    redis_url: str, redis_client: redis.Redis, cache_ttl: str
) -> None:
    """Overload is when answers time out and clients resend. The breaker ran before the key was
    looked up, so the retry of an accepted job was refused 429 "retry later" instead of getting its
    job, although it queues nothing. A new request is still refused. With the result cache on the
    key is read beside the lookup, without it only when the queue is full."""
    with api_client(
        redis_url, MAX_WAITING="1", STATS_REFRESH_SECONDS="0.05", RESULT_CACHE_TTL=cache_ttl
    ) as c:
        first = submit(c, idempotency_key="order-1")
        assert first.status_code == 202, first.text
        deadline = time.monotonic() + 5
        while 'api_queue_waiting_jobs{queue="default:v1"} 1.0' not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "backlog not re-read"
            time.sleep(0.02)
        retried = submit(c, idempotency_key="order-1")
        new = submit(c, idempotency_key="order-2")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["id"], retried.json()["created"]) == (first.json()["id"], False)
    assert new.status_code == 429 and new.json()["error"] == "overloaded", new.text
    assert arrivals(redis_client) == 1


def test_rate_limit_per_client_address_when_keys_are_not_checked(redis_url: str) -> None:
    with api_client(redis_url, RATE_LIMIT="3/m") as c:
        a = [submit(c, input=i) for i in range(4)]
        assert [r.status_code for r in a] == [202, 202, 202, 429]
        assert a[3].json()["error"] == "rate_limited"
        assert 15 <= int(a[3].headers["Retry-After"]) <= 21  # one token per 20 s
        # With API_KEYS unset a key is any string: a new one per request must not buy a new bucket.
        rotated = [
            c.post("/v1/jobs", json={"input": 1, "model": "default"}, headers={"X-API-Key": f"k{i}"})
            for i in range(2)
        ]
        assert [r.status_code for r in rotated] == [429, 429]
        assert c.get("/v1/models").status_code == 200  # reads are not rate limited
        assert 'api_rejections_total{reason="rate_limited"} 3.0' in c.get("/metrics").text


def test_rate_limit_per_api_key_when_keys_are_checked(redis_url: str) -> None:
    with api_client(redis_url, RATE_LIMIT="2/m", API_KEYS="key-number-one=*,key-number-two=*") as c:
        one = [
            c.post("/v1/jobs", json={"input": i, "model": "default"}, headers={"X-API-Key": "key-number-one"})
            for i in range(3)
        ]
        key_two = {"X-API-Key": "key-number-two"}
        two = c.post("/v1/jobs", json={"input": 1, "model": "default"}, headers=key_two)
    assert [r.status_code for r in one] == [202, 202, 429]
    assert two.status_code == 202  # same address, another caller: its own bucket


def test_api_keys_401_403(redis_url: str) -> None:
    keys = "admin-key-123=*,resnet-only-1=resnet"
    with api_client(redis_url, API_KEYS=keys, TRAFFIC_WEIGHTS="resnet:v1=1") as c:
        missing = submit(c)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
        assert missing.headers["WWW-Authenticate"].startswith("APIKey")
        assert submit(c, model="default").status_code == 401
        wrong = c.post("/v1/jobs", json={"input": 1, "model": "default"}, headers={"X-API-Key": "guess-123"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
        h_resnet = {"X-API-Key": "resnet-only-1"}
        forbidden = c.post("/v1/jobs", json={"input": 1, "model": "default"}, headers=h_resnet)
        assert forbidden.status_code == 403 and "may not use model 'default'" in forbidden.json()["detail"]
        ok = c.post("/v1/jobs", json={"input": 1, "model": "resnet"}, headers=h_resnet)
        assert ok.status_code == 202 and ok.json()["queue"] == "resnet:v1"
        admin = c.post(
            "/v1/jobs", json={"input": 1, "model": "default"}, headers={"X-API-Key": "admin-key-123"}
        )
        assert admin.status_code == 202
        job_url = admin.json()["url"]
        assert c.get(job_url).status_code == 401
        assert c.get(job_url, headers=h_resnet).status_code == 403  # a job of a model it may not use
        assert c.get(job_url, headers={"X-API-Key": "admin-key-123"}).status_code == 200
        assert c.post("/push", params={"input": "x"}, headers=h_resnet).status_code == 403
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes open
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers=h_resnet).json()["models"] == ["default", "resnet"]
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="unauthorized"} 5.0' in metrics
    assert 'api_rejections_total{reason="forbidden"} 3.0' in metrics


def traffic_cli(redis_url: str, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "api.traffic", *args], cwd=REPO, env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return run.stdout


def test_traffic_weights_split_and_live_rollback(redis_url: str, redis_client: redis.Redis) -> None:
    with api_client(redis_url, TRAFFIC_WEIGHTS="resnet:v1=80,resnet:v2=20") as c:
        queues = [submit(c, model="resnet", input=i).json()["queue"] for i in range(300)]
        v2 = queues.count("resnet:v2")
        assert 30 <= v2 <= 90, v2  # 60 expected; binomial sd ~7
        assert submit(c, model="resnet", version="v2").json()["queue"] == "resnet:v2"  # explicit wins
        assert submit(c, model="resnet", version="v7").json()["error"] == "unknown_version"
        shown = traffic_cli(redis_url, "set", "resnet", "v1=100", "v2=0")  # roll the canary back
        assert json.loads(shown) == {"resnet": {"v1": 100.0, "v2": 0.0}}
        deadline = time.monotonic() + 5
        while c.get("/v1/models").json()["traffic"]["resnet"] != {"v1": 100.0, "v2": 0.0}:
            assert time.monotonic() < deadline, "live weights not picked up"
            time.sleep(0.05)
        after = {submit(c, model="resnet", input=i).json()["queue"] for i in range(50)}
        assert after == {"resnet:v1"}
        assert traffic_cli(redis_url, "clear", "resnet").strip() == "{}"
        deadline = time.monotonic() + 5
        while c.get("/v1/models").json()["traffic"]["resnet"] != {"v1": 80.0, "v2": 20.0}:
            assert time.monotonic() < deadline, "configured weights not restored"
            time.sleep(0.05)


@pytest.mark.parametrize("trouble", ["stopped", "wrong-password", "missing-database"])
def test_the_traffic_command_names_a_server_it_cannot_use_without_its_password(
    valkey_factory: Callable[..., ValkeyServer], trouble: str
) -> None:
    """A stopped server or refused credentials were a redis-py traceback; now one line saying
    which server (password hidden) and what to check, exit 1, and nothing written."""
    server = valkey_factory(password="s3cret")
    url = server.url
    if trouble == "stopped":
        server.stop()
    elif trouble == "wrong-password":
        url = url.replace("s3cret", "wrong")
    else:
        url = url.rsplit("/", 1)[0] + "/99"
    run = subprocess.run(
        [sys.executable, "-m", "api.traffic", "set", "resnet", "v1=100"], cwd=REPO,
        env={**os.environ, "REDIS_URL": url}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"redis://:***@127.0.0.1:{server.port}/" in run.stderr and "s3cret" not in run.stderr
    if trouble == "stopped":
        assert "cannot reach Redis" in run.stderr and "set REDIS_URL" in run.stderr
    else:
        check = "the database number" if trouble == "missing-database" else "the password (and user)"
        assert f"check {check} in REDIS_URL" in run.stderr, run.stderr
        owner = redis.Redis(port=server.port, password="s3cret")
        assert owner.dbsize() == 0  # nothing was written
        owner.close()


def test_result_cache_answers_identical_requests(redis_url: str, redis_client: redis.Redis) -> None:
    # v2 takes no weighted traffic but may be named: the cache is per version
    with api_client(redis_url, RESULT_CACHE_TTL="60", TRAFFIC_WEIGHTS="default:v1=1,default:v2=0") as c:
        first = submit(c, input={"image": "cat.jpg", "size": 224}).json()
        while_queued = submit(c, input={"image": "cat.jpg", "size": 224}).json()
        assert while_queued["id"] != first["id"]  # only successes are served from the cache
        e1 = take_and_start(redis_client)
        finish(redis_client, e1, {"label": "cat"})
        hit = submit(c, input={"size": 224, "image": "cat.jpg"})  # key order does not matter
        assert hit.status_code == 200, hit.text
        assert hit.json()["id"] == e1.job_id and hit.json()["created"] is False
        assert hit.json()["status"] == "succeeded"
        assert submit(c, input={"image": "dog.jpg"}).status_code == 202
        assert submit(c, input={"image": "cat.jpg", "size": 224}, version="v2").status_code == 202
        metrics = c.get("/metrics").text
    assert arrivals(redis_client) == 3
    assert 'api_submissions_total{outcome="cached",queue="default:v1"} 1.0' in metrics


def test_a_bound_idempotency_key_decides_before_the_result_cache(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The cache matches the input alone: a key reused with the same input and other metadata was
    answered 200 with the cached job, where the key's contract is a 422."""
    with api_client(redis_url, RESULT_CACHE_TTL="60") as c:
        first = submit(c, input="cat.jpg", idempotency_key="k1", metadata={"user": "a"}).json()
        finish(redis_client, take_and_start(redis_client), {"label": "cat"})
        reused = submit(c, input="cat.jpg", idempotency_key="k1", metadata={"user": "b"})
        retried = submit(c, input="cat.jpg", idempotency_key="k1", metadata={"user": "a"})
        new_key = submit(c, input="cat.jpg", idempotency_key="k2", metadata={"user": "a"})
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused", reused.text
    assert retried.status_code == 202, retried.text  # the key's own job, as found
    assert (retried.json()["id"], retried.json()["created"], retried.json()["status"]) == (
        first["id"],
        False,
        "succeeded",
    )
    assert new_key.status_code == 200 and new_key.json()["id"] == first["id"]  # a new key: the cache
    assert arrivals(redis_client) == 1


def test_a_key_answered_from_the_cache_answers_its_retries_with_that_job(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A request with a new key answered from the cache left the key unbound: once the cache entry
    expired (its TTL is usually far shorter than the key's), the retry queued a second job, and the
    key could meanwhile be used for another request without the 422."""
    with api_client(redis_url, RESULT_CACHE_TTL="1") as c:
        submit(c, input="cat.jpg")
        finish(redis_client, take_and_start(redis_client), {"label": "cat"})
        cached = submit(c, input="cat.jpg", idempotency_key="order-7")
        assert cached.status_code == 200, cached.text
        other = submit(c, input="dog.jpg", idempotency_key="order-7")
        time.sleep(1.5)  # the cache entry is gone; the key (a day) is not
        retried = submit(c, input="cat.jpg", idempotency_key="order-7")
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused", other.text
    assert retried.status_code == 202, retried.text
    assert (retried.json()["id"], retried.json()["created"]) == (cached.json()["id"], False)
    assert retried.json()["status"] == "succeeded"
    assert arrivals(redis_client) == 1  # only the first, uncached submission queued a job


def test_result_cache_is_per_tenant_and_honours_the_key_prefix(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A hit hands over the earlier job's id, and the id reads the job's metadata: with API keys,
    tenant B's identical input was answered with tenant A's job. And the entry was written under
    the default key prefix while looked up under the configured one, so with KEY_PREFIX set the
    cache never hit."""
    settings = Settings(prefix="acme")
    env = {"RESULT_CACHE_TTL": "60", "API_KEYS": "tenant-key-aaa=*,tenant-key-bbb=*", "KEY_PREFIX": "acme"}
    with api_client(redis_url, **env) as c:

        def submit_as(key: str) -> Any:
            body = {"input": "same", "model": "default", "metadata": {"customer": key}}
            return c.post("/v1/jobs", json=body, headers={"X-API-Key": key})

        a = submit_as("tenant-key-aaa").json()
        [entry] = jq.fetch(redis_client, Q, "w1", block_ms=50, settings=settings)
        assert jq.start(redis_client, entry, "w1", settings=settings).job is not None
        jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, "out", 0.01, settings=settings)
        again = submit_as("tenant-key-aaa")
        assert again.status_code == 200 and again.json()["id"] == a["id"], again.text  # A's own hit
        other = submit_as("tenant-key-bbb")
        assert other.status_code == 202 and other.json()["id"] != a["id"], other.text
    assert not any(n.startswith(b"jq:") for n in redis_client.scan_iter("*"))  # all under the prefix


def test_probes_metrics_and_openapi(redis_url: str) -> None:
    with api_client(redis_url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        submit(c)
        c.get("/v1/jobs/feedc0de")
        metrics = c.get("/metrics").text
        schema = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    assert 'api_requests_total{code="202",method="POST",route="/v1/jobs"} 1.0' in metrics
    assert 'api_requests_total{code="404",method="GET",route="/v1/jobs/{job_id}"} 1.0' in metrics
    assert 'api_request_duration_seconds_bucket{le="0.025",method="POST",route="/v1/jobs"}' in metrics
    assert "api_redis_up 1.0" in metrics
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/push", "/status/{job_id}", "/data/{job_id}", "/infer"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_a_corrupt_record_is_a_500_in_the_usual_shape(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.hset(Keyspace().job("c0ffee"), mapping={"status": "queued"})  # no queue, no input
    redis_client.set(Keyspace().job("badtype"), "x")  # WRONGTYPE: a command error that is no outage
    with api_client(redis_url) as c:
        r = c.get("/v1/jobs/c0ffee")
        wrong_type = c.get("/v1/jobs/badtype")
        metrics = c.get("/metrics").text
    assert r.status_code == 500 and r.json()["error"] == "job_record_corrupt"  # naming job and field
    assert (r.json()["id"], r.json()["field"]) == ("c0ffee", "queue")
    assert wrong_type.status_code == 500 and wrong_type.json()["error"] == "internal_error"
    assert 'api_requests_total{code="500",method="GET",route="/v1/jobs/{job_id}"} 2.0' in metrics


def test_redis_refusing_writes_after_a_failed_save_is_a_503(
    valkey_factory: Callable[..., ValkeyServer],
) -> None:
    server = valkey_factory()
    r = redis.Redis.from_url(server.url)
    try:
        with api_client(server.url) as c:
            job = submit(c).json()
            # Make a save fail for real: the data directory (the server's cwd) disappears, then a
            # save point is configured and a background save started; Redis then refuses writes.
            shutil.rmtree(server.data_dir)
            r.config_set("save", "3600 1")
            r.bgsave()
            deadline = time.monotonic() + 10
            while r.info("persistence")["rdb_last_bgsave_status"] != "err":
                assert time.monotonic() < deadline, "the save did not fail"
                time.sleep(0.02)
            refused = submit(c, idempotency_key="order-1")
            pushed = c.post("/push", params={"input": "x"})
            read = c.get(job["url"])  # reads still work
            metrics = c.get("/metrics").text
    finally:
        r.config_set("save", "")  # writes resume, and the stop need not save into a missing directory
        r.close()
    for reply in (refused, pushed):
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"] == "redis_unavailable" and reply.headers["Retry-After"] == "2"
        assert "refuses writes because its persistence failed (MISCONF" in reply.json()["detail"]
    assert "resubmitting with the same idempotency_key" in refused.json()["detail"]
    assert "takes no idempotency key" in pushed.json()["detail"]
    assert "same idempotency_key" not in pushed.json()["detail"]
    assert read.status_code == 200
    assert 'api_rejections_total{reason="redis_unavailable"} 2.0' in metrics


def run_until_killed(url: str) -> None:
    """A script that never ends by itself, as a runaway one would: Valkey answers every other command
    BUSY once it has run past busy-reply-threshold, until SCRIPT KILL stops it."""
    r = redis.Redis.from_url(url)
    try:
        r.eval("while true do end", 0)
    except redis.ResponseError as exc:
        assert "SCRIPT KILL" in str(exc), exc
    finally:
        r.close()


def test_redis_busy_running_a_script_is_a_503_that_says_so(
    valkey_factory: Callable[..., ValkeyServer],
) -> None:
    """BUSY is a state that passes (the script ends or is killed), like a restart: it was answered
    500 "unexpected error", as if the API had a bug, without Retry-After."""
    server = valkey_factory()
    admin = redis.Redis.from_url(server.url)
    busy = threading.Thread(target=run_until_killed, args=(server.url,))
    try:
        with api_client(server.url) as c:
            job = submit(c).json()
            admin.config_set("busy-reply-threshold", 10)
            busy.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    admin.ping()
                except redis.ResponseError as exc:
                    assert str(exc).startswith("BUSY"), exc
                    break
                assert time.monotonic() < deadline, "the server never became busy"
                time.sleep(0.02)
            refused = submit(c, idempotency_key="order-1")
            read = c.get(job["url"])
            ready = c.get("/readyz")
            inferred = c.post("/infer", json={"prompt": "p"})
            metrics = c.get("/metrics").text
            admin.script_kill()
            busy.join(10)
            after = c.get(inferred.json().get("url", "/missing"))
    finally:
        if busy.is_alive():
            with contextlib.suppress(redis.ResponseError):
                admin.script_kill()
            busy.join(10)
        admin.close()
    for reply in (refused, read, ready, inferred):
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"] == "redis_unavailable" and reply.headers["Retry-After"] == "2"
        assert "busy running a script or function past its time limit (BUSY" in reply.json()["detail"]
    assert "resubmitting with the same idempotency_key" in refused.json()["detail"]
    # /infer's write was refused, but the API cannot tell that from a lost reply: it names the job.
    assert inferred.json()["url"] == f"/v1/jobs/{inferred.json()['id']}" and "queued" not in inferred.json()
    assert after.status_code == 404  # and indeed nothing was queued
    assert 'api_rejections_total{reason="redis_unavailable"} 3.0' in metrics


@pytest.mark.parametrize(
    ("field", "raw", "why"),
    [
        ("error", b"\xff\xfe oops", "('\\xff\\xfe oops'): not valid UTF-8"),
        ("input", b'{"a":"\xc3"}', "not valid UTF-8"),
        ("submitted_at", b"yesterday", "('yesterday'): could not convert"),
        ("status", b"paused", "('paused'): 'paused' is not a valid JobStatus"),
        ("queue", None, "is missing"),
    ],
    ids=["error-not-utf8", "input-not-utf8", "submitted_at", "status", "queue-missing"],
)
def test_an_undecodable_job_record_is_a_500_naming_the_job_and_the_field(
    redis_url: str, redis_client: redis.Redis, field: str, raw: bytes | None, why: str
) -> None:
    """A corrupt record was the generic 500 ("unexpected error") on every read endpoint. It is a 500
    that names the job and the field, without Retry-After (re-reading gives the same answer)."""
    with api_client(redis_url) as c:
        job_id = submit(c).json()["id"]
        if raw is None:
            redis_client.hdel(Keyspace().job(job_id), field)
        else:
            redis_client.hset(Keyspace().job(job_id), field, raw)
        for path in (f"/v1/jobs/{job_id}", f"/status/{job_id}", f"/data/{job_id}"):
            r = c.get(path)
            assert r.status_code == 500, (path, r.text)
            body = r.json()
            assert (body["error"], body["id"], body["field"]) == ("job_record_corrupt", job_id, field), body
            assert f"job {job_id}: its stored record cannot be read: field {field!r}" in body["detail"]
            assert why in body["detail"] and "retrying will not help" in body["detail"], body["detail"]
            assert "Retry-After" not in r.headers


@pytest.mark.parametrize("credentials", ["wrong-password", "no-password", "missing-database"])
def test_redis_refusing_the_credentials_is_a_misconfiguration_not_an_outage(
    valkey_factory: Callable[..., ValkeyServer], credentials: str
) -> None:
    """A wrong password (WRONGPASS) was transient: 503 "retry later" with Retry-After, and to /infer
    even ``queued: false``, which invites a resend; no password (NOAUTH) was the generic 500. Both are
    now a 503 ``redis_misconfigured`` saying what to check, with nothing inviting a retry. So is a
    database the server does not have (a 500 before), whose detail names the database, not the
    password."""
    server = valkey_factory(password="s3cret")
    url = {
        "wrong-password": server.url.replace("s3cret", "wrong"),
        "no-password": server.url.replace(":s3cret@", ""),
        "missing-database": server.url.rsplit("/", 1)[0] + "/99",
    }[credentials]
    refused, check = (
        ("refused the database REDIS_URL names", "check the database number in REDIS_URL")
        if credentials == "missing-database"
        else ("refused the credentials in REDIS_URL (AuthenticationError", "check the password")
    )
    with api_client(url) as c:
        answers = {
            "submit": submit(c, idempotency_key="k1"),
            "get": c.get("/v1/jobs/0123456789abcdef0123456789abcdef"),
            "infer": c.post("/infer", json={"prompt": "p"}),
            "push": c.post("/push", params={"input": "x"}),
            "readyz": c.get("/readyz"),
        }
    for what, r in answers.items():
        assert r.status_code == 503, (what, r.text)
        body = r.json()
        assert body["error"] == "redis_misconfigured", (what, body)
        assert refused in body["detail"], (what, body)
        assert check in body["detail"] and "retry later" not in body["detail"], (what, body)
        assert "queued" not in body and "Retry-After" not in r.headers, (what, body, r.headers)
    anonymous = redis.Redis(port=server.port, password="s3cret")
    assert anonymous.dbsize() == 0  # nothing was stored
    anonymous.close()


def test_a_submission_is_answered_alike_whether_its_body_takes_the_short_way_or_fastapis(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SubmitRoute`` reads a plain JSON body itself and leaves any other request to FastAPI's
    handler; either way the answer is the same (here: created, refused for the key, invalid)."""
    import api.routes_jobs

    short: list[bool] = []
    plain_body = api.routes_jobs.plain_body

    async def spy(request: Any) -> Any:
        body = await plain_body(request)
        short.append(body is not None)
        return body

    monkeypatch.setattr(api.routes_jobs, "plain_body", spy)
    key = {"X-API-Key": "key-number-one"}
    answers: dict[str, list[Any]] = {}
    with api_client(redis_url, API_KEYS="key-number-one=*") as c:
        for ctype in ("application/json", "application/json; charset=utf-8"):

            def post(body: dict[str, Any], headers: dict[str, str], ctype: str = ctype) -> Any:
                headers = {"Content-Type": ctype, **headers}
                return c.post("/v1/jobs", content=json.dumps(body), headers=headers)

            created = post({"input": {"n": 1}, "model": "default", "metadata": {"a": 1}}, key)
            assert created.status_code == 202, created.text
            job = created.json()
            assert created.headers["Location"] == job["url"] == f"/v1/jobs/{job['id']}"
            answers[ctype] = [
                (created.status_code, {k: v for k, v in job.items() if k not in ("id", "url")}),
                *(
                    (r.status_code, r.json(), r.headers.get("WWW-Authenticate"))
                    for r in (
                        post({"input": 1, "model": "default"}, {}),  # no key
                        post({"input": 1, "model": "default"}, {"X-API-Key": "nope"}),  # unknown key
                        post({"model": "default"}, key),  # no input
                        post({"input": 1, "model": "default", "priorty": "high"}, key),  # misspelt
                        post({"input": 1, "model": "nope"}, key),  # unknown model
                    )
                ),
            ]
            assert c.get(job["url"], headers=key).json()["metadata"] == {"a": 1}
    assert answers["application/json"] == answers["application/json; charset=utf-8"]
    assert answers["application/json"][0] == (
        202, {"status": "queued", "queue": "default:v1", "created": True}
    )  # fmt: skip
    assert [a[0] for a in answers["application/json"][1:]] == [401, 401, 422, 422, 422]
    # The short way took the requests that validate (the unknown model is refused by the service),
    # FastAPI's handler every other one, and every request with the charset parameter; those without
    # a valid key were refused before their body was read (neither way).
    assert short == [True, False, False, True] + [False] * 4
    assert arrivals(redis_client) == 2
