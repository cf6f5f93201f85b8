"""The job API against what abusive or unlucky clients send: bodies from callers without a valid key,
floods of them from one address, nesting deeper than a job can be read back, retries of keys whose job
is gone, the costs that grow with every model version ever used, and who may read its metrics (real
Valkey; the app in process, or ``python -m api`` where the proxy headers and ports are uvicorn's)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.app import create_app
from api.config import ApiConfig
from jobqueue import JobStatus, Keyspace, Settings
from jobqueue import sync as jq
from jobqueue.binding import bind_sync
from jobqueue.consumer import Outcome
from jobqueue.ops import idempotency_holder
from tests.integration.test_api_jobs import Q, arrivals, go_live, submit, take_and_start, wait_gone
from tests.support.api import FAST_API_ENV, api_client, api_process
from tests.support.valkey import free_port
from tests.support.workers import REPO

pytestmark = pytest.mark.integration

KEYS = "tenant-key-1=default,resnet-only-1=resnet"
NOT_JSON = b'{"model": "default", "input": [1, 2,'  # cut short: FastAPI's handler would answer 422


def raw_post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], int]:
    """POST through the ASGI app itself: (status, JSON body, how many times the app read the body)."""
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > 1:  # never asked for a second message: the body came in one
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": raw_headers, "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload), reads


def test_a_caller_without_a_valid_key_is_refused_before_its_body_is_read(redis_url: str) -> None:
    """A wrong or missing X-API-Key with a body: the body was read, parsed and validated (1 MiB of
    JSON: ~220 ms of CPU) before the 401, and the rate limit, keyed by the valid key, never applied.
    Now the 401 (and /infer's and /push's 403: their model is MODEL_REF's) comes first, without the
    body read; with a valid key the body is judged as before."""
    config = ApiConfig.from_env({**FAST_API_ENV, "REDIS_URL": redis_url, "API_KEYS": KEYS})
    app = create_app(config)  # no lifespan: nothing here reaches Redis
    json_type = {"Content-Type": "application/json"}
    huge = b'{"model":"default","input":[' + b",".join([b"0"] * 200_000) + b"]}"
    for path in ("/v1/jobs", "/infer"):
        for body in (NOT_JSON, huge):
            for who in ({}, {"X-API-Key": "wrong-key-123"}):
                status, answer, reads = raw_post(app, path, body, {**json_type, **who})
                assert (status, answer["error"], reads) == (401, "unauthorized", 0), (path, who, answer)
    status, answer, reads = raw_post(app, "/infer", NOT_JSON, {**json_type, "X-API-Key": "resnet-only-1"})
    assert (status, answer["error"], reads) == (403, "forbidden", 0)
    status, answer, reads = raw_post(app, "/v1/jobs", NOT_JSON, {**json_type, "X-API-Key": "tenant-key-1"})
    assert (status, answer["error"], reads) == (422, "invalid_request", 1)  # a valid key: judged as before
    with api_client(redis_url, API_KEYS=KEYS, TRAFFIC_WEIGHTS="resnet:v1=1") as c:
        wrong = {"X-API-Key": "wrong-key-123", **json_type}
        assert c.post("/v1/jobs", content=NOT_JSON, headers=wrong).status_code == 401
        assert c.post("/infer", content=b'{"prompt": ""}', headers=wrong).status_code == 401
        # No input in the query: a 422 with a valid key.
        assert c.post("/push", headers=wrong).status_code == 401
        assert c.post("/push", headers={"X-API-Key": "resnet-only-1"}).status_code == 403
        assert c.post("/push", headers={"X-API-Key": "tenant-key-1"}).status_code == 422
        ok = c.post("/infer", json={"prompt": "hi", "timeout": 1}, headers={"X-API-Key": "tenant-key-1"})
        assert ok.status_code == 504  # accepted (no worker here): a valid request is served as before
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="unauthorized"} 3.0' in metrics


def test_failed_authentications_are_limited_per_address_before_the_body_is_read(redis_url: str) -> None:
    """Requests with a wrong or missing key were answered 401 without end: the rate limit is keyed
    by the authenticated caller and never saw them. Past AUTH_FAILURE_LIMIT (3 here) an address's
    failures are a 429 that says why, still before a byte of the body is read."""
    env = {**FAST_API_ENV, "REDIS_URL": redis_url, "API_KEYS": KEYS, "AUTH_FAILURE_LIMIT": "3/m"}
    app = create_app(ApiConfig.from_env(env))  # no lifespan: nothing here reaches Redis
    huge = b'{"model":"default","input":[' + b",".join([b"0"] * 200_000) + b"]}"
    wrong = {"Content-Type": "application/json", "X-API-Key": "wrong-key-123"}
    answers = [raw_post(app, "/v1/jobs", huge, wrong) for _ in range(4)]
    assert [(status, answer["error"], reads) for status, answer, reads in answers] == [
        (401, "unauthorized", 0), (401, "unauthorized", 0), (401, "unauthorized", 0),
        (429, "too_many_auth_failures", 0),
    ]  # fmt: skip
    for path in ("/infer", "/push"):  # the routes that check the key before the body or query
        status, answer, reads = raw_post(app, path, huge, {"Content-Type": "application/json"})
        assert (status, answer["error"], reads) == (429, "too_many_auth_failures", 0), path
    status, answer, reads = raw_post(app, "/v1/jobs", NOT_JSON, {**wrong, "X-API-Key": "tenant-key-1"})
    assert (status, answer["error"], reads) == (422, "invalid_request", 1)  # a valid key: judged as ever


JOB = {"model": "default", "input": "x"}


def test_failed_authentications_are_counted_per_client_address_and_valid_keys_never_are(
    redis_url: str, tmp_path: Path
) -> None:
    """Through uvicorn, whose proxy headers name the client (the test connects from 127.0.0.1, a
    trusted proxy by default): each address its own bucket, IPv6 by /64, every authenticating route
    refused alike; a valid key is served from a refused address and never takes a token; the 429
    tells the client what is wrong and when to come back."""
    with api_process(redis_url, tmp_path, API_KEYS=KEYS, AUTH_FAILURE_LIMIT="3/m") as api, api.http() as http:

        def post(address: str, key: str | None = "wrong-key-123", path: str = "/v1/jobs") -> httpx.Response:
            headers = {"X-Forwarded-For": f"198.18.0.1, {address}"}  # the last hop is the client
            if key is not None:
                headers["X-API-Key"] = key
            return http.post(path, json=JOB, headers=headers)

        a = "203.0.113.7"
        assert [post(a, "tenant-key-1").status_code for _ in range(10)] == [202] * 10  # not counted
        assert [post(a).status_code for _ in range(3)] == [401] * 3
        refused = post(a)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 20  # a token every 20 s
        assert "WWW-Authenticate" not in refused.headers
        assert refused.json() == {
            "error": "too_many_auth_failures",
            "detail": f"unknown API key; too many requests from {a} failed to authenticate: retry "
            f"after {refused.headers['Retry-After']} s, with a valid X-API-Key",
        }
        xff = {"X-Forwarded-For": a}
        assert post(a, None).json()["detail"].startswith("missing API key: send it in the X-API-Key header;")
        assert post(a, path="/push").status_code == 429
        assert http.post("/infer", json={"prompt": "p"}, headers=xff).status_code == 429
        assert http.get("/v1/jobs/0123abcd", headers=xff).status_code == 429
        assert http.get("/v1/models", headers=xff).status_code == 429
        assert http.get("/healthz", headers=xff).status_code == 200  # nothing to authenticate
        # A valid key from the refused address: served, and it takes nothing.
        assert [post(a, "tenant-key-1").status_code for _ in range(10)] == [202] * 10
        assert post(a, "resnet-only-1").status_code == 403  # a valid key: not an authentication failure
        assert post("198.51.100.9").status_code == 401  # another address, its own bucket
        v6 = [post(f"2001:db8::{i}").status_code for i in range(1, 5)]
        assert v6 == [401, 401, 401, 429]  # one /64: one bucket
        assert post("2001:db8:0:1::1").status_code == 401
        metrics = api.metrics()
    assert 'api_rejections_total{reason="auth_rate_limited"} 7.0' in metrics
    assert 'api_rejections_total{reason="unauthorized"} 8.0' in metrics
    assert 'api_rejections_total{reason="forbidden"} 1.0' in metrics
    assert "api_auth_failure_addresses 4.0" in metrics


def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(redis_url: str, tmp_path: Path) -> None:
    """A client that is no trusted proxy cannot pick its bucket by writing X-Forwarded-For: its
    failures count against its own address, whatever it claims."""
    env = {"API_KEYS": KEYS, "AUTH_FAILURE_LIMIT": "3/m", "FORWARDED_ALLOW_IPS": "10.0.0.1"}
    with api_process(redis_url, tmp_path, **env) as api, api.http() as http:
        wrong = {"X-API-Key": "wrong-key-123"}
        codes = [
            http.post(
                "/v1/jobs", json=JOB, headers={**wrong, "X-Forwarded-For": f"203.0.113.{i}"}
            ).status_code
            for i in range(4)
        ]
        refused = http.post("/v1/jobs", json=JOB, headers={**wrong, "X-Forwarded-For": "198.51.100.9"})
    assert codes == [401, 401, 401, 429]
    assert "too many requests from 127.0.0.1 failed" in refused.json()["detail"]


def test_metrics_are_served_on_their_own_port_not_on_the_apis(redis_url: str, tmp_path: Path) -> None:
    """/metrics on the API's port showed anyone who can submit the per-queue submission counts,
    backlogs and refusals. By default it is a listener of its own (METRICS_PORT), which the
    NetworkPolicies open to Prometheus only; METRICS_PORT=PORT serves it there as before."""
    with api_process(redis_url, tmp_path) as api, api.http() as http:
        assert http.post("/push", params={"input": "x"}).status_code == 200
        hidden = http.get("/metrics")
        assert hidden.status_code == 404 and hidden.json()["error"] == "not_found"
        scraped = httpx.get(api.metrics_url, timeout=5)
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'api_submissions_total{outcome="created",queue="default:v1"} 1.0' in scraped.text
        assert 'api_requests_total{code="404",method="GET",route="<unmatched>"} 1.0' in scraped.text
        other = httpx.get(f"http://127.0.0.1:{api.metrics_port}/v1/models", timeout=5)
        assert other.status_code == 404  # that port serves the metrics and nothing else
    with api_process(redis_url, tmp_path, METRICS_PORT="PORT") as api, api.http() as http:
        assert api.metrics_port == api.port
        assert http.post("/push", params={"input": "x"}).status_code == 200
        assert 'api_submissions_total{outcome="created",queue="default:v1"} 1.0' in http.get("/metrics").text


def test_a_metrics_port_in_use_stops_the_api_with_the_variables_named(redis_url: str) -> None:
    """Not a traceback, nor an API running without the metrics its alerts read."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PATH": "", "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(free_port()),
            "METRICS_PORT": str(port),
        }  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-m", "api"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert (run.returncode, run.stderr.strip()) == (
        1, f"api: cannot serve metrics on 127.0.0.1:{port} (METRICS_HOST, METRICS_PORT): Address already in "
        "use; give METRICS_PORT a free port, or the API's PORT to serve /metrics there as before",
    )  # fmt: skip


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` arrays."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_input_and_metadata_nest_at_most_64_levels(redis_url: str, redis_client: redis.Redis) -> None:
    """Pydantic took up to ~254 levels; past ~250 its serializer cannot write the job back, and
    once the model echoed the input every read of the job was a 500. Now 64 levels at most, a 422
    naming the field and the limit (and no per-level path however deep the body goes)."""
    with api_client(redis_url) as c:
        for field, ok, deep in [
            ("input", nested(64), nested(65)),
            ("metadata", {"a": nested(63)}, {"a": nested(64)}),  # its own object is a level
        ]:
            body = {"model": "default", "input": "x", field: ok}
            assert c.post("/v1/jobs", json=body).status_code == 202, field
            for value in (deep, nested(254), nested(600)):
                refused = c.post("/v1/jobs", json={**body, field: value})
                assert refused.status_code == 422, (field, refused.text[:300])
                answer = refused.json()
                assert answer["error"] == "invalid_request" and len(refused.content) < 500, answer
                assert (
                    answer["detail"].startswith(f"body.{field}: ")
                    and "more than 64 levels" in answer["detail"]
                )
    assert arrivals(redis_client) == 2


def test_a_job_nested_deeper_than_pydantic_writes_is_read_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A job stored before the cap (or a model's output) that nests past pydantic's serializer:
    GET /v1/jobs/{id}, DELETE, /data and /infer answered 500 for good. Such fields are written by
    json instead."""
    deep_input, deep_meta = nested(254, "in"), {"m": nested(260)}
    queued = jq.submit_job(redis_client, Q, nested(300), metadata={"m": nested(300)}).job_id
    ran = jq.submit_job(redis_client, Q, deep_input, metadata=deep_meta).job_id
    assert take_and_start(redis_client).job_id == queued  # left running
    entry = take_and_start(redis_client)
    assert entry.job_id == ran
    assert (
        jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {"echo": nested(280)}, 0.01)
        is JobStatus.SUCCEEDED
    )
    with api_client(redis_url) as c:
        job = c.get(f"/v1/jobs/{ran}")
        assert job.status_code == 200, job.text[:300]
        got = job.json()
        assert (got["input"], got["metadata"], got["output"]) == (
            deep_input,
            deep_meta,
            {"echo": nested(280)},
        )
        assert (got["status"], got["queue"], got["attempts"]) == ("succeeded", Q, 1)
        assert got["latency"]["total_ms"] is not None
        data = c.get(f"/data/{ran}")
        assert data.status_code == 200 and data.json()["output"] == {"echo": nested(280)}, data.text[:300]
        running = c.get(f"/data/{queued}")
        assert running.status_code == 202 and running.headers["Retry-After"] == "1"
        assert running.json()["status"] == "running"
        assert c.get(f"/v1/jobs/{queued}").json()["input"] == nested(300)
        plain = c.post("/v1/jobs", json={"model": "default", "input": {"é": [1.5, None]}}).json()
        assert c.get(plain["url"]).json()["input"] == {"é": [1.5, None]}  # the usual way, as before
        cancelled = c.delete(plain["url"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize("cache_ttl", ["0", "60"])
def test_a_key_whose_job_is_gone_does_not_pass_a_full_queue(
    redis_url: str, redis_client: redis.Redis, cache_ttl: str
) -> None:
    """The breaker lets a retry through (it queues nothing), but the key's record outlives its job
    (IDEMPOTENCY_TTL against RESULT_TTL): any old key passed a full queue and queued a new job."""
    with api_client(
        redis_url, MAX_WAITING="2", RESULT_TTL="1", STATS_REFRESH_SECONDS="0.05", RESULT_CACHE_TTL=cache_ttl
    ) as c:
        old = submit(c, idempotency_key="old-1", input="old")
        assert c.delete(old.json()["url"]).json()["status"] == "cancelled"  # its record expires in 1 s
        wait_gone(c, old.json()["url"])
        assert redis_client.keys("jq:q:default:v1:idem:old-1")  # the key's record lives on
        live = submit(c, idempotency_key="live-1", input="live")
        assert live.status_code == 202, live.text
        deadline = time.monotonic() + 5
        while not c.get("/metrics").text.count('api_queue_waiting_jobs{queue="default:v1"} 2.0'):
            assert time.monotonic() < deadline, "backlog not re-read"  # the cancelled entry waits too
            time.sleep(0.02)
        stale = submit(c, idempotency_key="old-1", input="old")
        retried = submit(c, idempotency_key="live-1", input="live")
    assert stale.status_code == 429 and stale.json()["error"] == "overloaded", stale.text
    assert retried.status_code == 202 and retried.json()["id"] == live.json()["id"], retried.text
    assert arrivals(redis_client) == 2


def test_a_version_rolled_out_of_the_split_stops_being_read_and_exported(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backlog monitor read every queue the process ever accepted a job for, on every refresh,
    and kept an api_queue_waiting_jobs series per queue for the process's life. A queue the router
    no longer knows is forgotten once idle (FORGET_AFTER, shortened here); a known one is kept."""
    import api.admission

    monkeypatch.setattr(api.admission, "FORGET_AFTER", 0.3, raising=False)
    series = 'api_queue_waiting_jobs{queue="default:%s"}'
    with api_client(redis_url) as c:  # MODEL_REF default:v1
        go_live(c, redis_client, "default", {"v1": 50, "v2": 50})
        queues = {submit(c, input=i, idempotency_key=f"k{i}").json()["queue"] for i in range(20)}
        assert queues == {"default:v1", "default:v2"}
        deadline = time.monotonic() + 5
        while series % "v2" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "backlog not read"
            time.sleep(0.02)
        go_live(c, redis_client, "default", {"v1": 100})  # v2 rolled back
        time.sleep(0.4)  # idle past FORGET_AFTER
        deadline = time.monotonic() + 5
        while series % "v2" in (metrics := c.get("/metrics").text):
            assert time.monotonic() < deadline, "the retired queue is still exported"
            time.sleep(0.02)
        assert series % "v1" in metrics  # routed to: kept, however idle
        monitor = c.app.state.service.backlog  # type: ignore[attr-defined]
        assert set(monitor.waiting) == {"default:v1"}
        go_live(c, redis_client, "default", {"v1": 0, "v2": 100})  # rolled forward again: read again
        assert submit(c, input="again").json()["queue"] == "default:v2"
        deadline = time.monotonic() + 5
        while series % "v2" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the queue is not read again"
            time.sleep(0.02)


def hgets(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


def test_a_keyed_retry_asks_only_the_versions_that_may_hold_its_key(redis_client: redis.Redis) -> None:
    """idempotency_holder asked every version of the model ever used (one HGET each, 4 ms per keyed
    submission at 200 versions). Versions whose keys all expired are not asked; one whose key is
    live is, rolled out of the split or not; records written before the index are found as before,
    and the queues set stays a set."""
    holder = bind_sync(idempotency_holder)
    r, short = redis_client, Settings(idempotency_ttl=1)
    for v in range(1, 31):  # 30 retired versions, their keys expired
        jq.submit_job(r, f"m:v{v}", "old", idempotency_key="old", settings=short)
    jq.submit_job(r, "m:v31", "x", idempotency_key="live")  # its key kept a day
    time.sleep(1.2)
    r.config_resetstat()
    assert holder(r, "m", ["m:v32"], "new") is None
    assert holder(r, "m", ["m:v32"], "live") == "m:v31"  # rolled out of the split, still found
    assert hgets(r) == 4  # two queues asked, twice; not 31
    assert r.type(Keyspace().queues) == b"set" and len(r.smembers(Keyspace().queues)) == 31
    # Written before the index existed (an upgrade): every queue ever used is asked, as before,
    # and the first keyed submission starts the index with all of them.
    r.delete(Keyspace().keyed_queues("m"))
    assert holder(r, "m", ["m:v32"], "live") == "m:v31"
    jq.submit_job(r, "m:v32", "y", idempotency_key="other")
    r.config_resetstat()
    assert holder(r, "m", ["m:v32"], "live") == "m:v31"
    assert hgets(r) == 32  # every queue the set knew, for a day (their keys' longest ttl)
