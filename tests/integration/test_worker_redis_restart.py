"""A Redis restart (persistent, same port) is an outage the worker waits out without losing jobs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from jobqueue import JobStatus, WorkerInfo, WorkerState
from jobqueue import sync as jq
from tests.support.valkey import ValkeyServer
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration

Q = "default:v1"
T = TypeVar("T")


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


def test_a_job_lost_with_redis_data_is_reported_gone_not_reclaimed(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """A restart without persistence (documented to lose every job) mid-job: the worker's result is
    discarded since the job's record is gone, but its heartbeat said the job "was reclaimed by
    another worker" and its finish "discarded (reclaimed)", which sent an operator looking for a
    second worker running it. FINISH answered 'missing' apart from 'lost'; finish() folded both."""
    server = valkey_factory()  # appendonly no: a restart loses every job
    pool = WorkerPool(server.url, tmp_path / "workers")
    r = redis.Redis.from_url(server.url)
    try:
        w = pool.spawn("w", MODEL_PREDICT_SECONDS="2")
        job_id = jq.submit_job(r, Q, "x").job_id
        _until_running(r, job_id, time.monotonic() + 10, w.log)
        server.restart()
        # The API's next submission makes the stream again, the worker's next read the group: the
        # heartbeat's renewal then finds the group without the entry (before, it only failed).
        later = _retrying(lambda: jq.submit_job(r, Q, "after").job_id)
        done = jq.wait_for_job(r, later, 15)
        assert done is not None and done.status is JobStatus.SUCCEEDED, w.log()
        assert [x.name for x in jq.read_queue_stats(r, Q).workers] == ["w"]  # nobody else exists
        lines = [line for line in w.log(200).splitlines() if job_id in line]
        assert not any("reclaimed" in line for line in lines), "\n".join(lines)
        assert any("is gone from Redis" in line for line in lines), "\n".join(lines)
        assert any("discarded (the job's record is gone" in line for line in lines), "\n".join(lines)
        assert 'worker_jobs_total{queue="default:v1",status="missing"} 1.0' in w.get("/metrics")[1]
    finally:
        r.close()
        pool.kill_all()


def _until_running(r: redis.Redis, job_id: str, deadline: float, log: Callable[[], str]) -> None:
    """Wait until a worker has started ``job_id``, at most until ``deadline`` (``time.monotonic``);
    ``log`` explains a failure."""
    while (job := jq.get_job(r, job_id)) is None or job.status is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, log()
        time.sleep(0.02)


def _retrying(fn: Callable[[], T]) -> T:
    """``fn`` once the restarted server answers (the first command after a restart may find the
    client's old connection closed)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return fn()
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_after_an_outage_longer_than_the_visibility_timeout_live_holders_keep_their_jobs(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """No lease is renewed while Redis is down, so when it returns every running job looks
    abandoned. A worker that reclaimed at once would take them from live holders before their
    heartbeats renew them; it waits a visibility timeout from the end of the outage instead."""
    visibility = 5.0
    server = valkey_factory(appendonly=True)
    pool = WorkerPool(server.url, tmp_path / "workers")
    r = redis.Redis.from_url(server.url)
    try:
        # The holder is this test (it renews when told to, like a heartbeat that resumes a little
        # late); the worker that might reclaim is a real one.
        job_id = jq.submit_job(r, Q, "long").job_id
        [entry] = jq.fetch(r, Q, "holder", block_ms=100)
        assert jq.start(r, entry, "holder").job is not None
        info = WorkerInfo("holder", Q, WorkerState.BUSY, time.time(), time.time(), job=job_id)
        w = pool.spawn("reclaimer", VISIBILITY_TIMEOUT=str(visibility), HEARTBEAT_SECONDS="0.5")
        assert jq.heartbeat(r, info, lease=entry) is True

        server.stop()
        time.sleep(visibility + 1)  # the lease is now older than the visibility timeout
        server.start()
        # The holder's heartbeat comes back 3 s later, then keeps beating.
        time.sleep(3.0)
        held = []
        for _ in range(5):
            beat = replace(info, heartbeat_at=time.time())
            held.append(_retrying(lambda: jq.heartbeat(r, beat, lease=entry)))  # noqa: B023
            time.sleep(1.0)
        assert held == [True] * 5, w.log()
        job = jq.get_job(r, job_id)
        assert job is not None and (job.status, job.attempts) == (JobStatus.RUNNING, 1), w.log()
        assert "redis unavailable" in w.log(200) and "reclaimed job" not in w.log(200)
        assert w.proc.poll() is None
    finally:
        r.close()
        pool.kill_all()


def test_a_redis_refusing_writes_after_a_failed_save_is_waited_out_not_crashed_on(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """MISCONF (a save failed, e.g. a full disk: every write is refused until one succeeds) is an
    outage like any other. A worker that crashed on it lost the result of the job it had just run (so
    the job ran again after the visibility timeout), and idle workers crashed too, each restart
    paying the warm-up again."""
    server = valkey_factory()
    pool = WorkerPool(server.url, tmp_path / "workers")
    r = redis.Redis.from_url(server.url)
    try:
        busy = pool.spawn("busy", MODEL_PREDICT_SECONDS="1.0")
        idle = pool.spawn("idle", QUEUE="other:v1")
        job_id = jq.submit_job(r, Q, "through a refusal").job_id
        deadline = time.monotonic() + 10
        _until_running(r, job_id, deadline, busy.log)
        # Make a save fail for real: the data directory (the server's cwd) disappears, then a save
        # point is configured and a background save started; the server then refuses writes.
        shutil.rmtree(server.data_dir)
        r.config_set("save", "3600 1")
        r.bgsave()
        while r.info("persistence")["rdb_last_bgsave_status"] != "err":
            assert time.monotonic() < deadline, "the save did not fail"
            time.sleep(0.02)
        with pytest.raises(redis.ResponseError, match=r"^MISCONF"):
            r.set("probe", "1")
        time.sleep(2.0)  # the model returns meanwhile; its result cannot be recorded yet
        assert (busy.proc.poll(), idle.proc.poll()) == (None, None), busy.log() + idle.log()
        r.config_set("save", "")  # writes resume
        job = jq.wait_for_job(r, job_id, 10)
        assert job is not None and (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1), busy.log()
        assert "redis unavailable during recording a result" in busy.log(200)
        later = jq.submit_job(r, Q, "after").job_id
        done = jq.wait_for_job(r, later, 10)
        assert done is not None and done.status is JobStatus.SUCCEEDED, busy.log()
        assert (busy.proc.poll(), idle.proc.poll()) == (None, None)
    finally:
        r.config_set("save", "")  # the stop need not save into a missing directory
        r.close()
        pool.kill_all()


def _until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_an_outage_keeps_the_worker_ready_and_shows_in_healthz_and_metrics(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """Readiness stays the end of warm-up (the autoscaler's startup clock, its Ready count, the
    ReplicaSet's choice of victims, the PDB) and so does not follow Redis; but an outage was
    visible nowhere on the worker: /healthz said "ok" and no metric said Redis was unreachable."""
    server = valkey_factory(appendonly=True)
    pool = WorkerPool(server.url, tmp_path / "workers")
    up = 'worker_redis_up{queue="default:v1"} 1.0'
    down = 'worker_redis_up{queue="default:v1"} 0.0'
    try:
        w = pool.spawn("steady")
        assert w.get("/healthz") == (200, "ok\nredis: reachable\n")
        assert up in w.get("/metrics")[1]

        server.stop()
        _until(lambda: "redis: unreachable" in w.get("/healthz")[1], "/healthz reports the outage")
        code, body = w.get("/healthz")
        assert code == 200 and "ConnectionError" in body, body  # liveness: no restart for an outage
        assert w.get("/readyz") == (200, "idle\n")
        assert down in w.get("/metrics")[1]

        server.start()
        _until(lambda: w.get("/healthz") == (200, "ok\nredis: reachable\n"), "/healthz reports it over")
        assert up in w.get("/metrics")[1]
        assert w.get("/readyz") == (200, "idle\n") and w.proc.poll() is None
    finally:
        pool.kill_all()
