"""``python -m worker`` processes against a real Valkey: throughput, lifecycle, probes, failures."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from api.config import ApiConfig
from jobqueue import Entry, JobStatus, Keyspace, Priority, Settings, WorkerInfo, WorkerState
from jobqueue import sync as jq
from jobqueue.driver import decode
from jobqueue.scripts import FINISH, FORGET_CONSUMERS, INDEX_WORKER, RENEW, START, Script
from jobqueue.server import ValkeyServer
from tests.support.proxy import ReplyDropper
from tests.support.workers import FAST_ENV, WorkerPool, WorkerProcess
from worker.config import WorkerConfig
from worker.heartbeat import Heartbeat
from worker.metrics import WorkerMetrics
from worker.model import ReferenceModel
from worker.runner import EXIT_MISCONFIGURED, Worker
from worker.status import LiveStatus
from worker.watchdog import EXIT_JOB_TIMEOUT

pytestmark = pytest.mark.integration

Q = "default:v1"


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(interval)


def job_status(r: redis.Redis, job_id: str) -> JobStatus | None:
    job = jq.get_job(r, job_id)
    return job.status if job else None


def test_three_workers_run_200_jobs_exactly_once(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    for i in range(3):
        worker_pool.spawn(f"w{i}", ready=False, MODEL_PREDICT_SECONDS="0.01")
    for w in worker_pool.workers:
        w.wait_ready()
    ids = [jq.submit_job(redis_client, Q, {"n": i}).job_id for i in range(200)]
    wait_until(
        lambda: (
            jq.read_queue_stats(redis_client, Q).waiting + jq.read_queue_stats(redis_client, Q).in_flight == 0
        ),
        60,
    )
    wait_until(lambda: all(job_status(redis_client, i) is JobStatus.SUCCEEDED for i in ids[-5:]), 5)
    jobs = [jq.get_job(redis_client, i) for i in ids]
    assert all(j is not None and j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in jobs)
    assert [j.output["input"] for j in jobs if j] == [{"n": i} for i in range(200)]
    stats = jq.read_queue_stats(redis_client, Q, limit=1000)
    done = Counter(c.job_id for c in stats.completions)
    assert set(done) == set(ids) and set(done.values()) == {1}  # each job served exactly once
    assert stats.arrivals_total == 200
    per_worker = Counter(c.worker for c in stats.completions)
    assert set(per_worker) == {"w0", "w1", "w2"}, per_worker  # the load was shared


def test_a_worker_serves_the_jobs_the_api_queues_under_its_key_prefix(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """Workers ignored KEY_PREFIX and always read ``jq:*``: with the variable set on the api and
    worker Deployments alike, every job stayed queued under the API's prefix, never served."""
    settings = ApiConfig.from_env({"KEY_PREFIX": "tenant1"}).settings
    job_id = jq.submit_job(redis_client, Q, {"n": 1}, settings=settings).job_id
    worker_pool.spawn("prefixed", KEY_PREFIX="tenant1")

    def served() -> bool:
        job = jq.get_job(redis_client, job_id, settings=settings)
        return job is not None and job.status is JobStatus.SUCCEEDED

    wait_until(served)
    assert [w.name for w in jq.read_queue_stats(redis_client, Q, settings=settings).workers] == ["prefixed"]
    assert redis_client.keys("jq:*") == []  # nothing under the default prefix


def test_lifecycle_probes_registry_and_metrics(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    w = worker_pool.spawn("pod-a", ready=False, MODEL_SETUP_SECONDS="1.0", MODEL_PREDICT_SECONDS="0.6")
    wait_until(
        lambda: [x.state for x in jq.read_queue_stats(redis_client, Q).workers] == [WorkerState.STARTING]
    )
    assert w.get("/readyz")[0] == 503 and w.get("/healthz")[0] == 200
    w.wait_ready()
    [info] = jq.read_queue_stats(redis_client, Q).workers
    assert info.state is WorkerState.IDLE and info.ready_at is not None
    assert info.warmup_seconds is not None and 1.0 <= info.warmup_seconds < 5.0

    job_id = jq.submit_job(redis_client, Q, "x").job_id
    wait_until(lambda: jq.read_queue_stats(redis_client, Q).workers[0].busy)
    busy = jq.read_queue_stats(redis_client, Q)
    assert (busy.workers[0].job, busy.in_flight, busy.waiting) == (job_id, 1, 0)
    job = jq.wait_for_job(redis_client, job_id, 5)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.worker == "pod-a"
    assert "with input x was successful!" in job.output["output"]
    [c] = jq.read_queue_stats(redis_client, Q).completions
    assert c.duration is not None and 0.6 <= c.duration < 1.0

    code, body = w.get("/metrics")
    assert code == 200
    assert 'worker_jobs_total{queue="default:v1",status="succeeded"} 1.0' in body
    assert 'worker_service_seconds_count{queue="default:v1"} 1.0' in body
    assert (
        "worker_warmup_seconds" in body and 'worker_state{queue="default:v1",worker_state="idle"} 1.0' in body
    )


def test_sigterm_finishes_the_current_job_and_loses_nothing(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    w = worker_pool.spawn("drainer", MODEL_PREDICT_SECONDS="0.8")
    ids = [jq.submit_job(redis_client, Q, i).job_id for i in range(3)]
    wait_until(lambda: job_status(redis_client, ids[0]) is JobStatus.RUNNING)
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert job_status(redis_client, ids[0]) is JobStatus.SUCCEEDED
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight, stats.workers) == (2, 0, ())  # rest untouched, deregistered
    consumers = redis_client.xinfo_consumers(Keyspace().queue(Q).stream, "workers")
    assert [c["name"] for c in consumers] == []
    worker_pool.spawn("successor")
    for i in ids[1:]:
        job = jq.wait_for_job(redis_client, i, 10)
        assert job is not None and job.status is JobStatus.SUCCEEDED and job.attempts == 1


def test_sigkill_mid_job_is_reclaimed_with_attempts_2(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    victim = worker_pool.spawn("victim", MODEL_PREDICT_SECONDS="30")
    job_id = jq.submit_job(redis_client, Q, "survive").job_id
    wait_until(lambda: job_status(redis_client, job_id) is JobStatus.RUNNING)
    time.sleep(0.5)
    victim.proc.kill()
    victim.wait()
    t_kill = time.monotonic()
    worker_pool.spawn("rescuer", MODEL_PREDICT_SECONDS="0.05")
    job = jq.wait_for_job(redis_client, job_id, 15)
    assert job is not None and job.status is JobStatus.SUCCEEDED, job
    assert (job.attempts, job.worker) == (2, "rescuer")
    # VISIBILITY_TIMEOUT=2: reclaimed no sooner than the timeout, and not much later.
    assert 1.5 <= time.monotonic() - t_kill < 8
    wait_until(lambda: [w.name for w in jq.read_queue_stats(redis_client, Q).workers] == ["rescuer"])


def test_failing_model_is_dead_lettered_after_max_attempts(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    worker_pool.spawn(MODEL_CLASS="tests.support.models:AlwaysFails", MAX_ATTEMPTS="3")
    job_id = jq.submit_job(redis_client, Q, "poison").job_id
    job = jq.wait_for_job(redis_client, job_id, 10)
    assert job is not None and job.status is JobStatus.DEAD and job.attempts == 3
    assert job.error is not None and "RuntimeError: model exploded on 'poison'" in job.error
    [dead] = jq.read_dead_letters(redis_client, Q)
    assert (dead.job_id, dead.attempts) == (job_id, 3) and "model exploded" in dead.error
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight, stats.arrivals_total) == (0, 0, 1)


def test_permanent_error_fails_without_retry(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    worker_pool.spawn(MODEL_CLASS="tests.support.models:RejectsInput")
    bad = jq.submit_job(redis_client, Q, {"bad": True}).job_id
    good = jq.submit_job(redis_client, Q, {"bad": False}).job_id
    job = jq.wait_for_job(redis_client, bad, 5)
    assert job is not None and (job.status, job.attempts) == (JobStatus.FAILED, 1)
    assert job.error == "PermanentJobError: input rejected"
    done = jq.wait_for_job(redis_client, good, 5)  # the rejection did not take the worker down
    assert done is not None and (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)
    assert jq.read_dead_letters(redis_client, Q) == []


def test_an_output_nested_too_deep_to_encode_fails_the_job_and_the_worker_serves_on(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """Its RecursionError escaped the check of the output: a traceback, exit status 1, the job left
    running until reclaimed, the same crash on every redelivery, and at last a dead letter saying
    its worker "stopped heartbeating". It is failed for good like any output that does not encode."""
    w = worker_pool.spawn(MODEL_CLASS="tests.support.models:NestsTooDeep")
    bad = jq.submit_job(redis_client, Q, {"deep": True}).job_id
    good = jq.submit_job(redis_client, Q, {"deep": False}).job_id
    done = jq.wait_for_job(redis_client, good, 10)
    assert w.proc.poll() is None, w.log()
    assert done is not None and (done.status, done.worker) == (JobStatus.SUCCEEDED, w.name), done
    job = jq.get_job(redis_client, bad)
    assert job is not None and (job.status, job.attempts) == (JobStatus.FAILED, 1), job
    assert job.error is not None, job
    assert job.error.startswith("model output is not JSON-serialisable: maximum recursion depth"), job.error
    assert jq.read_dead_letters(redis_client, Q) == [] and "Traceback" not in w.log(200)


def test_cancelled_job_is_never_run(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    worker_pool.spawn(MODEL_PREDICT_SECONDS="0.3")
    first = jq.submit_job(redis_client, Q, 1).job_id
    doomed = jq.submit_job(redis_client, Q, 2).job_id
    last = jq.submit_job(redis_client, Q, 3).job_id
    assert jq.cancel_job(redis_client, doomed) is JobStatus.CANCELLED
    for job_id in (first, last):
        job = jq.wait_for_job(redis_client, job_id, 5)
        assert job is not None and job.status is JobStatus.SUCCEEDED
    job = jq.get_job(redis_client, doomed)
    assert job is not None and (job.status, job.started_at, job.attempts) == (JobStatus.CANCELLED, None, 0)
    assert jq.read_queue_stats(redis_client, Q).waiting == 0


def test_high_priority_jumps_the_backlog(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    normal = [jq.submit_job(redis_client, Q, i).job_id for i in range(5)]
    high = jq.submit_job(redis_client, Q, "vip", priority=Priority.HIGH).job_id
    worker_pool.spawn()
    jobs = [jq.wait_for_job(redis_client, i, 5) for i in [high, *normal]]
    started = [j.started_at for j in jobs if j is not None and j.started_at is not None]
    assert len(started) == 6 and started == sorted(started)  # vip first, then FIFO


def test_sigterm_during_setup_exits_at_once(redis_client: redis.Redis, worker_pool: WorkerPool) -> None:
    w = worker_pool.spawn("warming", ready=False, MODEL_SETUP_SECONDS="30")
    wait_until(
        lambda: [x.state for x in jq.read_queue_stats(redis_client, Q).workers] == [WorkerState.STARTING]
    )
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(5) == 0
    assert time.monotonic() - t0 < 2
    assert jq.read_queue_stats(redis_client, Q).workers == ()


def test_sigterm_during_a_setup_that_retries_on_any_error_still_exits_at_once(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """The abort raised into setup by the signal handler was an Exception: a setup retrying on
    ``except Exception`` swallowed it and warmed up in full (30 s here) before the worker exited."""
    w = worker_pool.spawn(
        "retrying",
        ready=False,
        MODEL_SETUP_SECONDS="30",
        MODEL_CLASS="tests.support.models:SetupRetriesOnAnyError",
    )
    wait_until(
        lambda: [x.state for x in jq.read_queue_stats(redis_client, Q).workers] == [WorkerState.STARTING]
    )
    w.signal(signal.SIGTERM)
    assert w.wait(5) == 0
    assert jq.read_queue_stats(redis_client, Q).workers == ()


def test_the_heartbeat_outlives_a_refusal_that_is_not_an_outage(redis_client: redis.Redis) -> None:
    """A command error (here WRONGTYPE on the registry key; MISCONF in the wild) must not end the
    thread that renews the running job's lease: once the error clears, heartbeats resume."""
    name, key = "hb-worker", Keyspace().worker("hb-worker")
    redis_client.set(key, "not a hash")
    metrics = WorkerMetrics(Q)
    beat = Heartbeat(redis_client, LiveStatus(name, Q), metrics, 0.05, Settings())
    beat.start()
    try:
        sample = metrics.registry.get_sample_value
        wait_until(lambda: (sample("worker_redis_errors_total", {"queue": Q}) or 0) >= 2)
        assert beat.is_alive()
        redis_client.delete(key)
        wait_until(lambda: redis_client.type(key) == b"hash")
    finally:
        beat.stop()


@pytest.mark.parametrize("script", [START, FINISH], ids=["start", "finish"])
def test_a_script_whose_reply_was_lost_is_retried_as_the_same_attempt(
    redis_client: redis.Redis, script: Script
) -> None:
    """The connection drops after the script ran on the server, and the worker retries it with the
    attempt's token. START's retry must find the attempt it began, so the job runs once with
    attempts 1 and is not dead-lettered at 1 (MAX_ATTEMPTS). FINISH's retry must return the
    success it recorded, where it answered 'lost' and the worker counted the success as discarded."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.script_load(script.source)  # so the dropped reply is the script's, not NOSCRIPT
    with ReplyDropper(port) as proxy:
        env = {**FAST_ENV, "HOSTNAME": "w-lossy", "REDIS_URL": proxy.url, "MAX_ATTEMPTS": "1"}
        worker = Worker(WorkerConfig.from_env(env), ReferenceModel(setup_seconds=0, predict_seconds=0))
        job_id = jq.submit_job(redis_client, Q, "once").job_id
        [entry] = jq.fetch(redis_client, Q, "w-lossy", block_ms=50)
        proxy.drop_reply_to(script.sha.encode())
        worker._process(entry)
        assert proxy.dropped.is_set()
        worker.client.close()
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts, job.error) == (JobStatus.SUCCEEDED, 1, None)
    assert jq.read_dead_letters(redis_client, Q) == []
    jobs = {
        s: worker.metrics.registry.get_sample_value("worker_jobs_total", {"queue": Q, "status": s})
        for s in ("succeeded", "lost")
    }
    assert jobs == {"succeeded": 1.0, "lost": None}


class Sabotaged(ReferenceModel):
    """Runs ``during`` inside its prediction, then has the heartbeat beat once: what happens to the
    job while its model runs, and what the heartbeat makes of it."""

    def __init__(self, during: Callable[[], None]) -> None:
        super().__init__(setup_seconds=0, predict_seconds=0)
        self.during = during
        self.heartbeat: Heartbeat | None = None

    def predict(self, input: object) -> dict[str, object]:
        self.during()
        assert self.heartbeat is not None
        self.heartbeat.beat()
        return super().predict(input)


@pytest.mark.parametrize("fate", ["reclaimed", "gone"])
def test_a_discarded_result_says_whether_the_job_was_reclaimed_or_lost_with_redis_data(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture, fate: str
) -> None:
    """Both were "reclaimed by another worker" / "discarded (reclaimed)": FINISH's 'missing' (the
    record is gone, as after a restart without persistence) was folded into 'lost' (another worker
    holds the job), and the heartbeat's renewal cannot tell the two apart by itself."""
    caplog.set_level(logging.INFO)

    def reclaim() -> None:
        stolen = jq.reclaim(redis_client, Q, "thief", 0)
        assert stolen is not None and jq.start(redis_client, stolen, "thief").job is not None

    def lose_the_data() -> None:
        redis_client.flushall()
        jq.ensure_groups(redis_client, Q)  # the API's next submission and the worker's next read

    model = Sabotaged(reclaim if fate == "reclaimed" else lose_the_data)
    env = {**FAST_ENV, "HOSTNAME": "w-unlucky", "REDIS_URL": "unused"}
    worker = Worker(WorkerConfig.from_env(env), model, client=redis_client)
    model.heartbeat = worker.heartbeat
    job_id = jq.submit_job(redis_client, Q, "x").job_id
    [entry] = jq.fetch(redis_client, Q, "w-unlucky", block_ms=50)
    worker._process(entry)

    said = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
    if fate == "reclaimed":
        assert f"job {job_id} was reclaimed by worker thief; this attempt's result will be discarded" in said
        assert any("discarded (reclaimed by another worker" in line for line in said), said
        job = jq.get_job(redis_client, job_id)
        assert job is not None and (job.status, job.worker) == (JobStatus.RUNNING, "thief")  # left alone
    else:
        assert not any("reclaimed" in line for line in said), said
        assert any("is gone from Redis" in line for line in said), said
        assert any("discarded (the job's record is gone" in line for line in said), said
    sample = worker.metrics.registry.get_sample_value
    counted = {s: sample("worker_jobs_total", {"queue": Q, "status": s}) for s in ("lost", "missing")}
    assert counted == (
        {"lost": 1.0, "missing": None} if fate == "reclaimed" else {"lost": None, "missing": 1.0}
    )


def test_the_worker_reclaims_past_a_long_list_of_live_entries(redis_client: redis.Redis) -> None:
    """150 entries held by a live worker sit ahead of an abandoned one: a reclaim looks at 100 per
    stream, so the worker's second reclaim must continue where the first stopped."""
    for i in range(151):
        jq.submit_job(redis_client, Q, i)
    live = [e for _ in range(150) for e in jq.fetch(redis_client, Q, "live", block_ms=50)]
    [lost] = jq.fetch(redis_client, Q, "dead-worker", block_ms=50)
    assert len(live) == 150
    redis_client.xclaim(lost.stream, "workers", "dead-worker", 0, [lost.entry_id], idle=60_000, justid=True)
    env = {**FAST_ENV, "HOSTNAME": "rescuer", "REDIS_URL": "unused", "VISIBILITY_TIMEOUT": "30"}
    worker = Worker(WorkerConfig.from_env(env), ReferenceModel(0, 0), client=redis_client)
    found = []
    for _ in range(3):
        worker._next_reclaim = 0.0  # reclaim on every call, not every few seconds
        found.append(entries := worker._next_entries())
        for entry in entries:  # as the loop does: every entry taken runs before the next read
            worker._process(entry)
    assert found == [[], [lost], []], found
    pending = redis_client.xpending(lost.stream, "workers")
    assert {c["name"]: c["pending"] for c in pending["consumers"]} == {b"live": 150}
    assert job_status(redis_client, lost.job_id) is JobStatus.SUCCEEDED


def test_a_heartbeat_failing_at_every_beat_does_not_postpone_the_reclaim(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """A dead peer's job waits for a worker whose heartbeat fails at every beat (its replies are
    lost, a transient error) while its job loop reaches Redis. Each failed beat counted as an
    outage, and each outage pushed the next reclaim a visibility timeout away: beating more often
    than that, the failures postponed it for ever and the job stayed pending. Failures between
    the loop's successful calls are not an outage that could have kept live holders from renewing,
    so the reclaim runs on schedule."""
    job_id = jq.submit_job(redis_client, Q, "orphaned").job_id
    [lost] = jq.fetch(redis_client, Q, "dead-peer", block_ms=50)
    redis_client.xclaim(lost.stream, "workers", "dead-peer", 0, [lost.entry_id], idle=60_000, justid=True)
    for script in (START, FINISH, RENEW, INDEX_WORKER, FORGET_CONSUMERS):
        redis_client.script_load(script.source)  # the loop's EVALSHAs never carry the marker below
    port = redis_client.connection_pool.connection_kwargs["port"]
    with ReplyDropper(port) as proxy:
        # Every heartbeat writes the registry entry; only its commands name it. redis-py's one
        # resend of each beat loses its reply too.
        proxy.drop_reply_to(Keyspace().worker("rescuer").encode(), times=1_000_000)
        # Beats every 0.5 s (FAST_ENV), far more often than the visibility timeout.
        w = worker_pool.spawn("rescuer", REDIS_URL=proxy.url, VISIBILITY_TIMEOUT="3")
        deadline = time.monotonic() + 12
        while job_status(redis_client, job_id) is not JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline, f"the dead peer's job was never reclaimed:\n{w.log()}"
            time.sleep(0.05)
        assert "heartbeat failed" in w.log() and "reclaimed job" in w.log(), w.log()
        w.signal(signal.SIGTERM)
        assert w.wait(10) == 0, w.log()
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.worker, job.attempts) == ("rescuer", 1)


def test_an_entry_delivered_to_the_worker_unbeknown_to_it_runs_at_once(redis_client: redis.Redis) -> None:
    """A read whose reply is lost (the client then resends it, which takes the next entry) leaves
    the delivered entry pending under the worker's name, and a container restarted in its pod finds
    its predecessor's that way: the worker runs it now, not a visibility timeout later."""
    job_id = jq.submit_job(redis_client, Q, "x").job_id
    [delivered] = jq.fetch(redis_client, Q, "w-lossy", block_ms=50)  # the reply that never arrived
    env = {**FAST_ENV, "HOSTNAME": "w-lossy", "REDIS_URL": "unused", "VISIBILITY_TIMEOUT": "60"}
    worker = Worker(WorkerConfig.from_env(env), ReferenceModel(0, 0), client=redis_client)
    assert worker._next_entries() == [delivered]
    worker._process(delivered)
    assert job_status(redis_client, job_id) is JobStatus.SUCCEEDED
    assert worker._next_entries() == []


def test_a_hung_job_times_out_is_retried_then_dead_lettered_and_each_worker_exits(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """The heartbeat would renew a hung model call's lease forever. Past JOB_TIMEOUT the attempt is
    recorded as a timeout (retried, then dead-lettered at MAX_ATTEMPTS) and the process exits
    non-zero so Kubernetes restarts it."""

    def spawn(name: str) -> WorkerProcess:
        return worker_pool.spawn(
            name, MODEL_CLASS="tests.support.models:Hangs", JOB_TIMEOUT="1", MAX_ATTEMPTS="2"
        )

    job_id = jq.submit_job(redis_client, Q, "stuck").job_id
    first = spawn("hung-1")
    assert first.wait(15) == EXIT_JOB_TIMEOUT, first.log()
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts) == (JobStatus.QUEUED, 1)
    assert job.error is not None and job.error.startswith("timed out after 1 s"), job.error
    [retry] = jq.read_queue_stats(redis_client, Q).completions
    assert (retry.status, retry.worker) == (JobStatus.QUEUED, "hung-1")
    assert retry.duration is not None and 1.0 <= retry.duration < 5.0
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight, stats.workers) == (1, 0, ())  # re-queued, deregistered

    second = spawn("hung-2")
    assert second.wait(15) == EXIT_JOB_TIMEOUT, second.log()
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts, job.worker) == (JobStatus.DEAD, 2, "hung-2")
    [dead] = jq.read_dead_letters(redis_client, Q)
    assert (dead.job_id, dead.attempts) == (job_id, 2) and dead.error.startswith("timed out after 1 s")
    assert "JOB_TIMEOUT" in second.log()


def test_a_job_record_that_does_not_decode_is_failed_and_the_worker_serves_on(
    redis_client: redis.Redis, worker_pool: WorkerPool
) -> None:
    """A poison record crashed the worker on every delivery (each crash a restart and a warm-up)
    until its attempts ran out. Each is now failed once, naming the field, and the worker goes on."""
    corrupt = {  # field -> what the record holds (None: the field is gone)
        "input": "{not json",
        "submitted_at": "yesterday",
        "queue": None,
        "priority": "urgent",
        "attempts": "two",  # the START script's own counter: it failed in Lua, never counted
        "entry": None,  # what FINISH matches the delivery against: without it no outcome was kept
    }
    poison = {}
    for field, value in corrupt.items():
        job_id = jq.submit_job(redis_client, Q, {"field": field}).job_id
        if value is None:
            redis_client.hdel(Keyspace().job(job_id), field)
        else:
            redis_client.hset(Keyspace().job(job_id), field, value)
        poison[field] = job_id
    good = jq.submit_job(redis_client, Q, "fine").job_id
    w = worker_pool.spawn("survivor")
    job = jq.wait_for_job(redis_client, good, 10)
    assert w.proc.poll() is None, w.log()
    assert job is not None and (job.status, job.attempts, job.worker) == (JobStatus.SUCCEEDED, 1, "survivor")

    expected = {
        "input": "malformed job record: field 'input' is malformed ('{not json'): Expecting property",
        "submitted_at": "malformed job record: field 'submitted_at' is malformed ('yesterday'): could not",
        "queue": "malformed job record: field 'queue' is missing",
        "priority": "malformed job record: field 'priority' is malformed ('urgent'): 'urgent' is not a",
        "attempts": "malformed job record: field 'attempts' is malformed ('two'): not a number",
        "entry": "malformed job record: field 'entry' is missing",
    }
    for field, job_id in poison.items():
        record: dict[str, str] = decode(redis_client.hgetall(Keyspace().job(job_id)))
        assert record["status"] == JobStatus.FAILED.value, (field, record)
        assert record["error"].startswith(expected[field]), (field, record["error"])
        assert record["attempts"] == ("0" if field in ("attempts", "entry") else "1"), (field, record)
        assert redis_client.ttl(Keyspace().job(job_id)) > 0  # a terminal record expires as usual
    failed = jq.get_job(redis_client, poison["attempts"])  # its counter reset, it reads back
    assert failed is not None and failed.status is JobStatus.FAILED
    # Reads (the autoscaler's read, each tick): the corrupt submitted_at stayed out of the stream.
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight) == (0, 0)  # acknowledged: never redelivered
    assert Counter(c.status for c in stats.completions) == {JobStatus.FAILED: 6, JobStatus.SUCCEEDED: 1}
    assert jq.read_dead_letters(redis_client, Q) == []
    assert 'worker_malformed_jobs_total{queue="default:v1"} 4.0' in w.get("/metrics")[1]
    assert "Traceback" not in w.log(200)


class GatedStatus(LiveStatus):
    """Holds every beat at its first step (the snapshot) while ``gate`` is clear: a beat in flight
    for as long as the test needs, with the real writes to follow."""

    def __init__(self, name: str, queue: str) -> None:
        super().__init__(name, queue)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def snapshot(self) -> tuple[WorkerInfo, Entry | None]:
        if not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        return super().snapshot()


def test_a_beat_in_flight_at_shutdown_cannot_re_register_the_worker(redis_client: redis.Redis) -> None:
    """Shutdown stopped the heartbeat (a join bounded at 5 s) and deregistered; a beat still in
    flight then wrote the entry back, as ``draining``, for WORKER_TTL: a ghost the autoscaler
    reads. Here the beat is held until the entry is gone (the bug) or for 0.5 s (then nothing can
    be gone yet when it writes: deregistering must wait for it), and no entry may survive."""
    env = {**FAST_ENV, "HOSTNAME": "leaver", "REDIS_URL": "unused", "HEARTBEAT_SECONDS": "60"}
    env |= {"VISIBILITY_TIMEOUT": "120", "WORKER_TTL": "300"}
    worker = Worker(WorkerConfig.from_env(env), ReferenceModel(0, 0), client=redis_client)
    status = GatedStatus("leaver", Q)
    worker.status = worker.heartbeat.status = status
    key = Keyspace().worker("leaver")
    status.mark_ready()
    worker.heartbeat.start()  # registers, then sleeps its 60 s interval
    wait_until(lambda: redis_client.exists(key) == 1)
    status.drain()

    # The beat in flight: the heartbeat's own call, from a second thread so that it is in flight
    # whatever the heartbeat thread's join does (the setup's first beat runs off-thread too).
    status.gate.clear()
    in_flight = threading.Thread(target=worker.heartbeat.beat, daemon=True)
    in_flight.start()
    assert status.entered.wait(5)
    leaving = threading.Thread(target=worker._leave, daemon=True)
    leaving.start()
    deadline = time.monotonic() + 0.5
    while redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.005)
    status.gate.set()
    for thread in (in_flight, leaving):
        thread.join(10)
        assert not thread.is_alive()

    assert redis_client.exists(key) == 0, redis_client.hgetall(key)
    assert jq.read_queue_stats(redis_client, Q).workers == ()
    worker.heartbeat.beat()  # any later beat (the thread's next one, say) writes nothing either
    assert redis_client.exists(key) == 0 and redis_client.zcard(Keyspace().queue(Q).workers) == 0


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (
            "wrong-password",
            [
                "refused the credentials in REDIS_URL (AuthenticationError",
                "check the password (and user) in REDIS_URL",
            ],
        ),
        (
            "missing-database",
            [
                "refused the database REDIS_URL names (DB index is out of range",
                "check the database number in REDIS_URL",
            ],
        ),
    ],
)
def test_a_worker_whose_redis_url_is_refused_exits_loudly_before_its_warm_up(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path, refusal: str, said: list[str]
) -> None:
    """A wrong password was an outage to the worker: it backed off and retried forever, never
    ready, with a warning every twentieth attempt. A database the server lacks (``/99``; Valkey has
    16) crashed it with a traceback and status 1 after its warm-up: a restart loop, each restart a
    warm-up. Both now exit with status 2, one line saying what to check in REDIS_URL, before the
    model's setup starts (its 60 s here would outlast the wait)."""
    server = valkey_factory(password="s3cret")
    urls = {
        "wrong-password": server.url.replace("s3cret", "wrong"),
        "missing-database": server.url.rsplit("/", 1)[0] + "/99",
    }
    pool = WorkerPool(urls[refusal], tmp_path / "workers")
    try:
        w = pool.spawn("misconfigured", ready=False, MODEL_SETUP_SECONDS="60")
        assert w.wait(10) == EXIT_MISCONFIGURED, w.log()
        log = w.log(200)
        assert all(words in log for words in said) and "Traceback" not in log, log
        assert "setting up model" not in log, log
    finally:
        pool.kill_all()


def test_a_worker_started_while_redis_is_down_sets_up_and_serves_once_it_is_back(
    valkey_factory: Callable[..., ValkeyServer], tmp_path: Path
) -> None:
    """The check at start that refuses a misconfigured REDIS_URL takes an unreachable server for
    what it is, an outage: the worker sets up meanwhile and serves once the server is back."""
    server = valkey_factory()
    server.stop()
    pool = WorkerPool(server.url, tmp_path / "workers")
    try:
        w = pool.spawn("early", ready=False)
        wait_until(lambda: "setting up model" in w.log(), 10)
        server.start()
        w.wait_ready()
        r = redis.Redis.from_url(server.url)
        job = jq.wait_for_job(r, jq.submit_job(r, Q, "x").job_id, 10)
        r.close()
        assert job is not None and job.status is JobStatus.SUCCEEDED, w.log()
        assert "redis unavailable at start" in w.log() and w.proc.poll() is None, w.log()
    finally:
        pool.kill_all()
