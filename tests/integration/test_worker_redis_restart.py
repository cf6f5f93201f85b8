"""A Redis restart (persistent, same port) is an outage the worker waits out without losing jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jobqueue import JobStatus
from jobqueue import sync as jq
from tests.support.valkey import ValkeyServer
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration

Q = "default:v1"


def test_worker_reconnects_and_queued_jobs_complete(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    server = valkey_factory(appendonly=True)
    pool = WorkerPool(server.url, tmp_path / "workers")
    r = redis.Redis.from_url(server.url)
    try:
        w = pool.spawn("phoenix", MODEL_PREDICT_SECONDS="0.3")
        ids = [jq.submit_job(r, Q, i).job_id for i in range(8)]
        first = jq.wait_for_job(r, ids[0], 5)
        assert first is not None and first.status is JobStatus.SUCCEEDED

        server.stop()  # jobs 1.. are queued or in flight; AOF holds them
        time.sleep(1.0)
        assert w.proc.poll() is None, w.log()
        server.start()  # same port, same data directory

        ids += [jq.submit_job(r, Q, i).job_id for i in range(8, 10)]
        jobs = [jq.wait_for_job(r, i, 15) for i in ids]
        assert all(j is not None and j.status is JobStatus.SUCCEEDED for j in jobs), [
            (j.id, j.status) for j in jobs if j
        ]
        assert [j.attempts for j in jobs if j] == [1] * 10
        assert w.proc.poll() is None
        assert "redis unavailable" in w.log(200)
        stats = jq.read_queue_stats(r, Q)
        assert (stats.waiting, stats.in_flight, stats.arrivals_total) == (0, 0, 10)
        assert [x.name for x in stats.workers] == ["phoenix"]  # heartbeats resumed

        server.stop()  # now while the worker is idle, blocked reading the stream
        time.sleep(0.5)
        server.start()
        late = jq.submit_job(r, Q, "after").job_id
        job = jq.wait_for_job(r, late, 15)
        assert job is not None and job.status is JobStatus.SUCCEEDED, w.log()
    finally:
        r.close()
        pool.kill_all()
