"""Synchronous ``POST /infer`` against a real Valkey and a real worker process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx2  # what the TestClient returns (see pyproject: dev)
import pytest
import redis
from fastapi.testclient import TestClient

from api.client import JobClient, JobTimeoutError
from jobqueue import JobStatus, Keyspace
from jobqueue import sync as jqs
from jobqueue.ratelimit import TAKE
from jobqueue.scripts import SUBMIT
from tests.support.api import ApiProcess, api_client, api_process
from tests.support.proxy import ReplyDropper
from tests.support.valkey import ValkeyServer
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration


def wait_for_metric(c: TestClient, line: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while line not in c.get("/metrics").text:
        assert time.monotonic() < deadline, f"{line!r} never appeared"
        time.sleep(0.02)


def test_infer_happy_path_and_cache_hit(redis_url: str, worker_pool: WorkerPool) -> None:
    worker_pool.spawn("w0", MODEL_PREDICT_SECONDS="0.05")
    env = {
        "KV_ENDPOINTS": "redis://kv-0:6379, redis://kv-1:6379",
        "HOSTNAME": "router-7",
        "RESULT_CACHE_TTL": "60",
    }
    with api_client(redis_url, **env) as c:
        r = c.post("/infer", json={"prompt": "a cat"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["modelRef"], body["prompt"], body["routerPod"]) == ("default:v1", "a cat", "router-7")
        assert body["kvEndpoints"] == ["redis://kv-0:6379", "redis://kv-1:6379"]
        assert 50 <= body["processingMs"] < 5000 and body["cached"] is False
        assert "with input a cat was successful!" in body["output"]["output"]
        assert c.get(f"/v1/jobs/{body['id']}").json()["status"] == "succeeded"
        again = c.post("/infer", json={"prompt": "a cat"}).json()
        assert again["cached"] is True and again["id"] == body["id"]


def test_infer_timeout_is_504_and_the_job_lives_on(
    redis_url: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    with api_process(redis_url, tmp_path, INFER_TIMEOUT="0.3") as api, api.http() as http:
        r = http.post("/infer", json={"prompt": "slow", "timeout": 30})  # capped at INFER_TIMEOUT
        assert r.status_code == 504, r.text
        body = r.json()
        assert body["error"] == "timeout" and int(r.headers["Retry-After"]) >= 1
        assert body["url"] == f"/v1/jobs/{body['id']}" and body["url"] in body["detail"]
        assert http.get(body["url"]).json()["status"] == "queued"  # kept its id, not cancelled
        worker_pool.spawn("w0", MODEL_PREDICT_SECONDS="0.05")
        with JobClient(api.url) as client:
            assert client.wait(body["id"], timeout=10)["output"]["input"] == "slow"
            followed = client.infer("followed", timeout=10)  # would 504 server-side; the client waits on
            assert followed["output"]["input"] == "followed"
            worker_pool.workers[0].proc.kill()
            with pytest.raises(JobTimeoutError) as exc:
                client.infer("nobody serves", timeout=1)
            assert exc.value.job_id


def test_max_concurrency_refuses_the_excess_with_429(redis_url: str) -> None:
    with api_client(redis_url, MAX_CONCURRENCY="2", INFER_TIMEOUT="2") as c:
        results: list[httpx2.Response] = []

        def call() -> None:
            results.append(c.post("/infer", json={"prompt": "p"}))

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for_metric(c, "api_infer_in_flight 2.0")  # both are waiting (no worker)
        refused = c.post("/infer", json={"prompt": "p"})
        for t in threads:
            t.join()
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_requests"
        assert refused.headers["Retry-After"] == "1"
        assert sorted(r.status_code for r in results) == [504, 504]
        assert c.post("/v1/jobs", json={"input": 1, "model": "default"}).status_code == 202  # async path open
        metrics = c.get("/metrics").text
    assert 'api_rejections_total{reason="concurrency"} 1.0' in metrics
    assert 'api_rejections_total{reason="timeout"} 2.0' in metrics
    assert "api_infer_in_flight 0.0" in metrics


def test_infer_bad_input(redis_url: str) -> None:
    with api_client(redis_url) as c:
        assert (
            "body.prompt: String should have at least 1 character"
            in c.post("/infer", json={"prompt": ""}).text
        )
        assert "body.prompt: Field required" in c.post("/infer", json={"input": "x"}).text
        r = c.post("/infer", json={"prompt": "x", "timeout": -1})
        assert (
            r.status_code == 422
            and "body.timeout: Input should be greater than or equal to 1" in r.json()["detail"]
        )
        r = c.post(
            "/infer", content=b'{"prompt": "x", "timeout": NaN}', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and "body.timeout: Input should be a finite number" in r.json()["detail"]


def test_a_request_timeout_is_capped_by_infer_timeout_not_refused(redis_url: str) -> None:
    """``timeout`` was refused above 3600 (422), though INFER_TIMEOUT may be longer and the docs say
    a request's timeout is capped by it: with INFER_TIMEOUT=7200 a request asking for 4000 s (a
    shorter deadline) could not be made. Any timeout of 1 s or more is taken; the shorter wins."""
    with api_client(redis_url, INFER_TIMEOUT="7200") as c:
        started = time.monotonic()
        r = c.post("/infer", json={"prompt": "x", "timeout": 1})  # shorter: honoured (no worker)
        assert r.status_code == 504 and "no result within 1 s" in r.json()["detail"], r.text
        assert time.monotonic() - started < 6
    with api_client(redis_url, INFER_TIMEOUT="0.3") as c:
        for longer in (4000, 1e300):  # capped to INFER_TIMEOUT, no worker: the 504 at 0.3 s
            r = c.post("/infer", json={"prompt": "x", "timeout": longer})
            assert r.status_code == 504 and "no result within 0.3 s" in r.json()["detail"], r.text


def test_redis_lost_while_waiting_is_503_with_the_job_id(valkey_factory: Callable[..., ValkeyServer]) -> None:
    server = valkey_factory()
    with api_client(server.url, INFER_TIMEOUT="10") as c:
        answer: list[httpx2.Response] = []
        waiting = threading.Thread(target=lambda: answer.append(c.post("/infer", json={"prompt": "p"})))
        waiting.start()
        direct = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 10
        while not direct.get(Keyspace().queue("default:v1").arrivals):  # accepted, now waiting
            assert time.monotonic() < deadline
            time.sleep(0.02)
        direct.close()
        server.stop()
        waiting.join(15)
    [r] = answer
    assert r.status_code == 503 and r.json()["error"] == "redis_unavailable", r.text
    assert r.json()["url"] == f"/v1/jobs/{r.json()['id']}" and "Retry-After" in r.headers


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:g} s"
        time.sleep(0.02)
    return time.monotonic() - start


def open_infer(api: ApiProcess, prompt: str) -> socket.socket:
    """A raw HTTP/1.1 ``POST /infer`` left waiting for its answer, so the test can hang up on it."""
    body = json.dumps({"prompt": prompt}).encode()
    head = (
        f"POST /infer HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    sock.sendall(head.encode() + body)
    return sock


def queued_job_id(r: redis.Redis, timeout: float = 10) -> str:
    """The id of the one job in default:v1's stream, once the API has written it."""
    stream = Keyspace().queue("default:v1").stream
    eventually(lambda: r.xlen(stream) > 0, timeout, "the job was never queued")
    [(_, fields)] = cast(list[tuple[bytes, dict[bytes, bytes]]], r.xrange(stream))
    return fields[b"job"].decode()


def metric(api: ApiProcess, line: str) -> bool:
    return line in api.metrics()


def test_client_disconnect_stops_the_wait_and_cancels_the_queued_job(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with api_process(redis_url, tmp_path, INFER_TIMEOUT="30") as api:
        sock = open_infer(api, "nobody reads this")
        job_id = queued_job_id(redis_client)  # no worker: it stays queued
        assert metric(api, "api_infer_in_flight 1.0")
        sock.close()
        took = eventually(lambda: metric(api, "api_infer_in_flight 0.0"), 5, "still waiting after hang-up")
        assert took < 5  # not INFER_TIMEOUT (30 s)
        job = jqs.get_job(redis_client, job_id)
        assert job is not None and job.status is JobStatus.CANCELLED, job
        assert metric(api, 'api_infer_abandoned_total{outcome="cancelled"} 1.0')
        assert metric(api, 'api_requests_total{code="499",method="POST",route="/infer"} 1.0')
        with api.http() as http:  # the slot is free again and the API serves as before
            assert http.post("/v1/jobs", json={"input": 1, "model": "default"}).status_code == 202


def test_client_disconnect_leaves_a_running_job_to_finish(
    redis_url: str, redis_client: redis.Redis, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    worker_pool.spawn("w0", MODEL_PREDICT_SECONDS="3")
    with api_process(redis_url, tmp_path, INFER_TIMEOUT="30") as api:
        sock = open_infer(api, "started")
        job_id = queued_job_id(redis_client)

        def running() -> bool:
            job = jqs.get_job(redis_client, job_id)
            return job is not None and job.status is JobStatus.RUNNING

        eventually(running, 10, "the worker never started the job")
        sock.close()
        eventually(lambda: metric(api, 'api_infer_abandoned_total{outcome="running"} 1.0'), 2.5, "abandon")
        assert metric(api, "api_infer_in_flight 0.0")
        assert metric(api, 'api_infer_abandoned_total{outcome="cancelled"} 0.0')
        done = jqs.wait_for_job(redis_client, job_id, 10)
        assert done is not None and done.status is JobStatus.SUCCEEDED, done


def test_the_deadline_covers_a_slow_submission(redis_url: str, redis_client: redis.Redis) -> None:
    """Redis holds the write (CLIENT PAUSE WRITE, 4 s) past INFER_TIMEOUT (1 s): the 504 comes at the
    deadline, not after the submission returns plus a full wait (5 s)."""
    with api_client(redis_url, INFER_TIMEOUT="1") as c:
        redis_client.client_pause(4000, all=False)  # WRITE mode: the API's reads still run
        try:
            start = time.monotonic()
            r = c.post("/infer", json={"prompt": "slow write"})
            took = time.monotonic() - start
        finally:
            redis_client.client_unpause()
        assert r.status_code == 504 and r.json()["error"] == "timeout", r.text
        assert 0.9 <= took < 2.5, took
        body = r.json()
        assert "submission did not complete" in body["detail"] and int(r.headers["Retry-After"]) >= 1
        assert body["url"] == f"/v1/jobs/{body['id']}"
        # The API gave up on the write and closed its connection, so the paused write never ran.
        assert c.get(body["url"]).status_code == 404
        assert 'api_rejections_total{reason="timeout"} 1.0' in c.get("/metrics").text


def arrivals(r: redis.Redis) -> int:
    return int(r.get(Keyspace().queue("default:v1").arrivals) or 0)


def test_a_503_once_the_write_was_sent_names_the_job_and_the_client_does_not_resend(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The job is written, then the reply is lost (twice: redis-py reconnects and resends once by
    itself). The 503 named no job, so the client took it for "nothing stored" and resent the prompt:
    a second job. It now names the job, and the client follows it instead."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.script_load(SUBMIT.source)  # so the dropped reply is the script's, not NOSCRIPT
    with ReplyDropper(port) as proxy, api_process(proxy.url, tmp_path, INFER_TIMEOUT="30") as api:
        proxy.drop_reply_to(SUBMIT.sha.encode(), times=2)
        with api.http() as http:
            r = http.post("/infer", json={"prompt": "lost reply", "timeout": 5})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["url"] == f"/v1/jobs/{body['id']}" and "may or may not have been queued" in body["detail"]
        assert "queued" not in body and int(r.headers["Retry-After"]) >= 1
        job = jqs.get_job(redis_client, body["id"])
        assert job is not None and job.status is JobStatus.QUEUED  # it was written
        proxy.drop_reply_to(SUBMIT.sha.encode(), times=2)
        with JobClient(api.url) as client, pytest.raises(JobTimeoutError) as exc:
            client.infer("lost again", timeout=1)  # no worker: followed by id until its timeout
        job = jqs.get_job(redis_client, exc.value.job_id)
        assert job is not None and job.input == "lost again"
    assert arrivals(redis_client) == 2  # one job per call: nothing resent


def test_a_503_before_the_write_says_nothing_was_queued(redis_client: redis.Redis) -> None:
    """The rate limit's read fails (the connection drops), before the job is written: the one 503 of
    /infer a client may resend without queueing the prompt twice, and it says so."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.script_load(TAKE.source)
    with ReplyDropper(port) as proxy, api_client(proxy.url, RATE_LIMIT="100/s") as c:
        proxy.drop_reply_to(TAKE.sha.encode(), times=2)
        r = c.post("/infer", json={"prompt": "p", "timeout": 5})
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["queued"] is False and "id" not in body and "url" not in body
    assert "before the job was written: nothing was queued" in body["detail"]
    assert arrivals(redis_client) == 0 and not redis_client.keys(Keyspace().job("*"))
