"""End to end with real processes: ``python -m api`` (uvicorn) + ``python -m worker`` x3 + Valkey."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import redis

from api.client import JobClient, RetryPolicy
from jobqueue import sync as jq
from jobqueue.server import free_port
from tests.support import api as support_api
from tests.support.api import api_client, api_process
from tests.support.valkey import ValkeyServer
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration

Q = "default:v1"


def test_200_jobs_over_http_each_done_exactly_once(
    redis_url: str, redis_client: redis.Redis, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    for i in range(3):
        worker_pool.spawn(f"w{i}", ready=False, MODEL_PREDICT_SECONDS="0.01")
    with api_process(redis_url, tmp_path) as api, api.http() as http:
        for w in worker_pool.workers:
            w.wait_ready()

        def push(i: int) -> str:
            if i % 2:
                r = http.post("/push", params={"input": f"job-{i}"})
                assert r.status_code == 200, r.text
            else:
                r = http.post("/v1/jobs", json={"input": f"job-{i}", "model": "default"})
                assert r.status_code == 202, r.text
            return str(r.json()["id"])

        with ThreadPoolExecutor(8) as pool:  # concurrent clients
            ids = list(pool.map(push, range(200)))
        assert len(set(ids)) == 200

        deadline = time.monotonic() + 60
        pending = set(ids)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} jobs unfinished"
            pending = {i for i in pending if http.get(f"/status/{i}").json()["status"] != "succeeded"}
            time.sleep(0.1)
        data = [http.get(f"/data/{i}").json() for i in ids]
        metrics = api.metrics()
    assert [d["output"]["input"] for d in data] == [f"job-{i}" for i in range(200)]
    assert all(d["latency"]["total_ms"] >= d["latency"]["service_ms"] >= 10 for d in data)
    stats = jq.read_queue_stats(redis_client, Q, limit=1000)
    served = Counter(c.job_id for c in stats.completions)
    assert set(served) == set(ids) and set(served.values()) == {1}  # each job served exactly once
    assert stats.arrivals_total == 200 and (stats.waiting, stats.in_flight) == (0, 0)
    assert set(Counter(c.worker for c in stats.completions)) == {"w0", "w1", "w2"}
    assert all(j is not None and j.attempts == 1 for j in (jq.get_job(redis_client, i) for i in ids))
    assert 'api_requests_total{code="202",method="POST",route="/v1/jobs"} 100.0' in metrics


def test_redis_down_is_503_with_retry_after_then_recovers(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    server = valkey_factory(password="s3cret-pw")  # AUTH on the way
    with api_process(server.url, tmp_path) as api, api.http(timeout=15) as http:
        assert http.get("/readyz").status_code == 200
        assert http.post("/push", params={"input": "before"}).status_code == 200
        server.stop()
        down = http.post("/v1/jobs", json={"input": "x", "model": "default"})
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "redis_unavailable" and int(down.headers["Retry-After"]) >= 1
        assert http.get("/v1/jobs/0123abcd").status_code == 503
        ready = http.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
        assert http.get("/healthz").status_code == 200  # liveness: no restart for a Redis outage
        server.start()
        deadline = time.monotonic() + 10
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, api.log()
            time.sleep(0.1)
        after = http.post("/v1/jobs", json={"input": "after", "model": "default"})
        assert after.status_code == 202, after.text
        assert http.get(after.json()["url"]).json()["status"] == "queued"
        metrics = api.metrics()
        # SIGTERM: graceful shutdown, after which uvicorn re-raises the signal to exit with it
        assert api.stop() in (0, -signal.SIGTERM)
    assert 'api_rejections_total{reason="redis_unavailable"}' in metrics
    assert "api_redis_up 1.0" in metrics


def test_client_retries_429_with_backoff_and_follows_jobs(
    redis_url: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    with api_process(redis_url, tmp_path, RATE_LIMIT="2/s,burst=2") as api:
        sleeps: list[float] = []

        def sleep(s: float) -> None:
            sleeps.append(s)
            time.sleep(s)

        with JobClient(api.url, retry=RetryPolicy(attempts=6, base=0.05), sleep=sleep) as client:
            jobs = [client.submit({"n": i}, model="default") for i in range(5)]  # 2 at once, then 2/s
            assert len({j["id"] for j in jobs}) == 5
            assert sleeps and all(s >= 1 for s in sleeps)  # honoured Retry-After: 1
            worker_pool.spawn("w0", MODEL_PREDICT_SECONDS="0.01")
            done = [client.wait(j["id"], timeout=20) for j in jobs]
            assert {d["status"] for d in done} == {"succeeded"}
            again = client.submit({"n": 0}, model="default", idempotency_key="same")
            assert client.submit({"n": 0}, model="default", idempotency_key="same")["id"] == again["id"]
    with pytest.raises(httpx.ConnectError):  # the server is gone: connection errors retried, then raised
        JobClient(api.url, retry=RetryPolicy(attempts=2, base=0.01)).get("x")


def test_high_priority_jumps_the_backlog_of_a_real_worker(redis_url: str, worker_pool: WorkerPool) -> None:
    with api_client(redis_url) as c:
        normal = [c.post("/v1/jobs", json={"input": i, "model": "default"}).json()["id"] for i in range(6)]
        high = c.post("/v1/jobs", json={"input": "vip", "model": "default", "priority": "high"}).json()["id"]
        worker_pool.spawn("w0", MODEL_PREDICT_SECONDS="0.02")
        deadline = time.monotonic() + 20
        while c.get(f"/v1/jobs/{normal[-1]}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = {i: c.get(f"/v1/jobs/{i}").json()["started_at"] for i in [high, *normal]}
    assert min(started, key=lambda i: started[i]) == high
    assert sorted(normal, key=lambda i: started[i]) == normal  # FIFO within a priority


def test_a_port_taken_before_the_api_binds_it_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness never mistakes another server on the API's port for the API (CI: a 501 to POST)."""
    taken = free_port()
    other = HTTPServer(("127.0.0.1", taken), _ProbeLike)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    picks = [taken]  # the API's first port; any other pick (its METRICS_PORT, the retry) is free
    monkeypatch.setattr(support_api, "free_port", lambda: picks.pop(0) if picks else free_port())
    try:
        with api_process("redis://127.0.0.1:1/0", tmp_path) as api:
            assert api.port != taken
            assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    finally:
        other.shutdown()
        other.server_close()
    assert "address already in use" in (tmp_path / f"api-{taken}.log").read_text().lower()


class _ProbeLike(BaseHTTPRequestHandler):
    """Answers GET /healthz with 200 like a worker's probe server, and nothing else."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        return
