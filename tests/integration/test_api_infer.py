"""Synchronous ``POST /infer`` against a real Valkey and a real worker process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2  # what the TestClient returns (see pyproject: dev)
import pytest
import redis
from fastapi.testclient import TestClient

from api.client import JobClient, JobTimeoutError
from jobqueue import Keyspace
from tests.support.api import api_client, api_process
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
