"""The Redis signal sources against a real Valkey server: what one read sees, and failing safe."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis

from autoscaler.config import ListSourceConfig, StreamSourceConfig
from autoscaler.engine.snapshot import Decision, Snapshot
from autoscaler.engine.target import WorkloadSpec
from autoscaler.logs import JsonFormatter
from autoscaler.loop import LoopSettings, TargetLoop
from autoscaler.sources.base import SourceUnavailableError
from autoscaler.sources.redis_source import (
    COMPLETIONS_BATCH,
    ArrivalHistory,
    ListSource,
    StreamSource,
    make_source,
)
from jobqueue import WorkerInfo, WorkerState
from jobqueue import sync as jq
from jobqueue.consumer import Outcome
from jobqueue.keys import Keyspace
from jobqueue.types import Settings
from tests.support.valkey import ValkeyServer
from tests.unit.doubles import Clock, MemoryTarget

pytestmark = pytest.mark.integration

QUEUE = "src:v1"


def test_stream_source_reads_waiting_in_flight_arrivals_completions_and_busy_workers(
    redis_url: str, redis_client: redis.Redis
) -> None:
    source = make_source(StreamSourceConfig(queue=QUEUE, redis_url=redis_url))
    assert isinstance(source, StreamSource)
    empty = source.read()
    assert (empty.waiting, empty.in_flight, empty.arrivals_total, empty.busy_by_worker) == (0, 0, 0, {})

    for n in range(5):
        jq.submit_job(redis_client, QUEUE, {"n": n})
    jq.ensure_groups(redis_client, QUEUE)
    (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
    started = jq.start(redis_client, entry, "w1")
    assert started.job is not None
    now = time.time()
    jq.heartbeat(redis_client, WorkerInfo("w1", QUEUE, WorkerState.BUSY, now - 10, now, job=entry.job_id))
    jq.heartbeat(redis_client, WorkerInfo("w2", QUEUE, WorkerState.IDLE, now - 10, now))
    busy = source.read()
    assert (busy.waiting, busy.in_flight, busy.arrivals_total) == (4, 1, 5)
    assert busy.busy_by_worker == {"w1": 1, "w2": 0}

    jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {"ok": True}, 0.25)
    done = source.read()
    assert (done.waiting, done.in_flight, done.completions, done.service_times) == (4, 0, 1, (0.25,))
    record = jq.get_job(redis_client, entry.job_id)
    assert record is not None and record.finished_at is not None
    assert done.latencies == (record.finished_at - record.submitted_at,)
    again = source.read()  # completions are reported once
    assert (again.completions, again.service_times, again.latencies) == (0, (), ())
    source.close()


def test_worker_ttl_seconds_bounds_how_long_a_silent_worker_counts_by_the_servers_clock(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """``source.worker_ttl_seconds`` was accepted and handed to the source, which never used it: a
    worker counted for as long as its own WORKER_TTL kept its registry entry, so shortening it (to
    stop a dead worker's last "busy" beat protecting its pod) changed nothing. Silence is judged
    by the server's clock, so a worker whose own clock runs behind still counts while it beats."""
    workers_ttl = Settings(worker_ttl=30.0)  # the workers' own WORKER_TTL
    now = time.time()
    silent = WorkerInfo("silent", QUEUE, WorkerState.BUSY, now - 60, now, job="j1")
    jq.heartbeat(redis_client, silent, settings=workers_ttl)
    bounded = make_source(StreamSourceConfig(queue=QUEUE, redis_url=redis_url, worker_ttl_seconds=1))
    unbounded = make_source(StreamSourceConfig(queue=QUEUE, redis_url=redis_url))
    assert bounded.read().busy_by_worker == {"silent": 1}

    time.sleep(1.5)  # "silent" beats no more; "late-clock" beats now, its clock two minutes behind
    late = WorkerInfo("late-clock", QUEUE, WorkerState.BUSY, now - 180, now - 120, job="j2")
    jq.heartbeat(redis_client, late, settings=workers_ttl)
    assert bounded.read().busy_by_worker == {"late-clock": 1}
    assert unbounded.read().busy_by_worker == {"late-clock": 1, "silent": 1}  # unset: the workers' TTL
    bounded.close()
    unbounded.close()


def test_a_pulse_reads_the_counts_alone_and_leaves_the_completions_to_the_next_read(
    redis_url: str, redis_client: redis.Redis
) -> None:
    source = make_source(StreamSourceConfig(queue=QUEUE, redis_url=redis_url))
    assert source.read().arrivals_total == 0
    for n in range(6):
        jq.submit_job(redis_client, QUEUE, {"n": n})
    jq.ensure_groups(redis_client, QUEUE)
    (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
    jq.start(redis_client, entry, "w1")
    jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {}, 0.75)
    (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
    jq.start(redis_client, entry, "w1")  # one in flight
    pulse = source.pulse()
    assert (pulse.waiting, pulse.in_flight, pulse.arrivals_total) == (4, 1, 6)
    assert (pulse.completions, pulse.service_times, pulse.busy_by_worker) == (0, (), {})
    counts = jq.read_queue_counts(redis_client, QUEUE)
    assert (counts.waiting, counts.in_flight, counts.arrivals_total, counts.waiting_exact) == (4, 1, 6, True)
    read = source.read()  # the completion the pulse passed over is still the tick's
    assert (read.waiting, read.in_flight, read.arrivals_total, read.service_times) == (4, 1, 6, (0.75,))
    source.close()
    redis_client.rpush("celery", 1, 2)
    plain = ListSource(redis.Redis.from_url(redis_url), "celery")
    assert plain.pulse().waiting == 2 and plain.pulse().arrivals_total is None
    plain.close()


def test_stream_history_has_each_job_once_at_its_submission(
    redis_url: str, redis_client: redis.Redis
) -> None:
    jq.ensure_groups(redis_client, QUEUE)
    submitted = []
    for n in range(3):
        submitted.append(jq.submit_job(redis_client, QUEUE, {"n": n}).job_id)
        (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
        jq.start(redis_client, entry, "w1")
        # The first job fails once and is retried: two completions, one arrival.
        if n == 0:
            jq.finish(redis_client, entry, "w1", Outcome.ERROR, "transient", 0.25)
            (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
            jq.start(redis_client, entry, "w1")
        jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {}, 0.5)
    records = [jq.get_job(redis_client, job_id) for job_id in submitted]
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE)
    history = source.history(3600)
    assert history.arrival_times == tuple(r.submitted_at for r in records if r is not None)
    assert history.service_times == (0.25, 0.5, 0.5, 0.5)  # every attempt is a service sample
    assert source.history(0).arrival_times == ()  # nothing was submitted within the last 0 s
    assert source.read().completions == 0  # the first tick does not count the history again
    source.close()


def test_the_first_read_seeds_service_times_but_reports_no_latencies(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """What finished before this process watched was counted by the one before: no double count."""
    jq.ensure_groups(redis_client, QUEUE)
    jq.submit_job(redis_client, QUEUE, 1)
    (entry,) = jq.fetch(redis_client, QUEUE, "w1", block_ms=100)
    jq.start(redis_client, entry, "w1")
    jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, {}, 0.5)
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE)
    first = source.read()
    assert (first.service_times, first.latencies) == ((0.5,), ())
    source.close()


def test_completions_written_before_submitted_at_fall_back_to_the_start(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Entries of an older worker (no submitted_at): arrival ~ start, no latency, nothing fails."""
    completions = Keyspace().queue(QUEUE).completions
    now = time.time()
    redis_client.xadd(
        completions, {"job": "old", "finished_at": now - 1, "duration": 0.5, "status": "succeeded"}
    )
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE)
    assert source.history(3600).arrival_times == ((now - 1) - 0.5,)
    redis_client.xadd(
        completions, {"job": "old2", "finished_at": now, "duration": 0.5, "status": "succeeded"}
    )
    read = source.read()
    assert (read.service_times, read.latencies) == ((0.5,), ())
    source.close()


def _finish_jobs(client: redis.Redis, first: int, count: int) -> tuple[float, ...]:
    """``count`` completions written straight to the stream, as workers at full speed would.

    Each has its own service time (job n took n ms), so a read's samples name the jobs it saw.
    """
    completions = Keyspace().queue(QUEUE).completions
    now = time.time()
    pipe = client.pipeline(transaction=False)
    durations = tuple(n / 1000 for n in range(first, first + count))
    for n, duration in enumerate(durations, start=first):
        pipe.xadd(
            completions,
            {
                "job": f"job-{n}",
                "finished_at": now,
                "duration": duration,
                "status": "succeeded",
                "submitted_at": now - 2.0,
                "worker": "w1",
            },
        )
    pipe.execute()
    return durations


def test_a_read_catches_up_with_more_completions_than_one_batch(redis_url: str) -> None:
    """1,500 completions per tick (300/s at 5 s) are all reported each tick: the lag does not grow.

    One batch of 1,000 a tick fell 500 further behind on every tick here.
    """
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE)
    assert source.read().completions == 0  # seeded on an empty stream
    client = redis.Redis.from_url(redis_url)
    per_tick = COMPLETIONS_BATCH + COMPLETIONS_BATCH // 2
    for tick in range(3):
        durations = _finish_jobs(client, tick * per_tick, per_tick)
        read = source.read()
        # Every job that finished since the last read, oldest first, none twice.
        assert (read.completions, read.service_times) == (per_tick, durations)
        assert read.latencies == pytest.approx((2.0,) * per_tick)
    assert source.read().completions == 0
    source.close()
    client.close()


def test_a_read_returns_a_bounded_number_of_completions_and_leaves_the_rest_to_the_next(
    redis_url: str,
) -> None:
    """A backlog bigger than the bound is read over several ticks, in order, none lost or repeated."""
    client = redis.Redis.from_url(redis_url)
    bound = 2 * COMPLETIONS_BATCH
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE, max_completions=bound)
    source.read()
    durations = _finish_jobs(client, 0, 2 * bound + 500)
    reads = [source.read().service_times for _ in range(4)]
    assert [len(r) for r in reads] == [bound, bound, 500, 0]
    assert sum(reads, ()) == durations
    source.close()
    client.close()


def test_list_source_reads_llen_and_the_optional_counter(redis_url: str, redis_client: redis.Redis) -> None:
    # A foreign system's list and counter, named by the operator (not our key layout).
    redis_client.rpush("celery", *range(7))
    redis_client.set("celery:pushed", 42)
    with_counter = make_source(
        ListSourceConfig(key="celery", arrivals_key="celery:pushed", redis_url=redis_url)
    )
    signals = with_counter.read()
    assert (signals.waiting, signals.in_flight, signals.arrivals_total) == (7, 0, 42)
    without = ListSource(redis.Redis.from_url(redis_url), "celery")
    assert without.read().arrivals_total is None
    redis_client.set("not-a-list", "x")
    with pytest.raises(SourceUnavailableError, match="WRONGTYPE"):
        ListSource(redis.Redis.from_url(redis_url), "not-a-list").read()
    with_counter.close()
    without.close()


def test_a_bad_arrivals_counter_is_a_failed_read_naming_arrivals_key(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """It was named as the list's problem (WRONGTYPE), or escaped read() as a bare ValueError: a
    traceback every tick, naming nothing."""
    redis_client.rpush("celery", "job")
    source = make_source(ListSourceConfig(key="celery", arrivals_key="celery_total", redis_url=redis_url))
    redis_client.rpush("celery_total", "oops")  # the setting names a list by mistake
    with pytest.raises(SourceUnavailableError) as wrong_type:
        source.read()
    assert str(wrong_type.value).startswith("arrivals_key celery_total: WRONGTYPE "), wrong_type.value
    # jobqueue's own error stays a Redis error, for any other caller that catches those
    assert isinstance(wrong_type.value.__cause__, redis.ResponseError)
    for value in ("twelve", "12.5", "", "1e3"):
        redis_client.set("celery_total", value)
        with pytest.raises(SourceUnavailableError) as bad_value:
            source.read()
        assert str(bad_value.value) == f"arrivals_key celery_total: holds {value!r}, not an integer counter"
    redis_client.set("not-a-list", "x")  # the list's own problem is still the list's
    with pytest.raises(SourceUnavailableError, match=r"^list not-a-list: WRONGTYPE"):
        ListSource(redis.Redis.from_url(redis_url), "not-a-list", "celery_total").read()
    source.close()


def test_an_integral_counter_written_as_a_float_is_read(redis_url: str, redis_client: redis.Redis) -> None:
    """A client that SETs the count as a float ("12.0") or moves it with INCRBYFLOAT still counts."""
    redis_client.rpush("celery", "job")
    source = make_source(ListSourceConfig(key="celery", arrivals_key="celery_total", redis_url=redis_url))
    redis_client.set("celery_total", "12.0")
    assert source.read().arrivals_total == 12
    redis_client.incrbyfloat("celery_total", 3.0)
    assert source.read().arrivals_total == 15
    redis_client.incr("celery_total")  # INCR takes over again once INCRBYFLOAT wrote an integer
    assert source.read().arrivals_total == 16
    source.close()


def test_password_from_env_and_an_unreachable_server(
    valkey_factory: Callable[..., ValkeyServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = valkey_factory(password="s3cret")
    monkeypatch.setenv("QUEUE_REDIS_PASSWORD", "s3cret")
    config = StreamSourceConfig(
        queue=QUEUE,
        redis_url=f"redis://127.0.0.1:{server.port}/0",
        password_env="QUEUE_REDIS_PASSWORD",
        socket_timeout_seconds=0.5,
    )
    source = make_source(config)
    assert source.read().waiting == 0
    server.stop()
    started = time.monotonic()
    # The error names the address and the setting to check, not just "Error 111".
    with pytest.raises(SourceUnavailableError, match=rf"127\.0\.0\.1:{server.port}.*redis_url"):
        source.read()
    with pytest.raises(SourceUnavailableError):
        source.pulse()
    assert time.monotonic() - started < 3  # a dead server costs a bounded wait, never a hang
    server.start()
    assert source.read().waiting == 0  # reconnects by itself
    source.close()

    monkeypatch.setenv("QUEUE_REDIS_PASSWORD", "wrong")
    wrong = make_source(config)
    with pytest.raises(SourceUnavailableError, match="password_env"):
        wrong.read()
    wrong.close()


def test_a_database_the_server_lacks_is_named_with_the_setting_to_check(redis_url: str) -> None:
    """The hint said only "refused the read", not which database or where it is set."""
    base = redis_url.rsplit("/", 1)[0]
    source = make_source(StreamSourceConfig(queue=QUEUE, redis_url=f"{base}/99", socket_timeout_seconds=2))
    with pytest.raises(
        SourceUnavailableError, match=r"has no database 99: check the database number.*redis_url"
    ):
        source.read()
    source.close()


def test_a_job_dead_lettered_by_the_reclaimer_counts_once_with_no_service_sample(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Its worker died on the last attempt: a latency for the SLO count, no made-up service time."""
    settings = Settings(max_attempts=1)
    source = StreamSource(redis.Redis.from_url(redis_url), QUEUE)
    source.read()  # seeded: later completions carry latencies
    job_id = jq.submit_job(redis_client, QUEUE, 1).job_id
    jq.ensure_groups(redis_client, QUEUE)
    (lost,) = jq.fetch(redis_client, QUEUE, "gone", block_ms=100)
    jq.start(redis_client, lost, "gone", settings=settings)
    time.sleep(0.06)
    entry = jq.reclaim(redis_client, QUEUE, "w2", 50)
    assert entry is not None and jq.start(redis_client, entry, "w2", settings=settings).skipped == "dead"
    record = jq.get_job(redis_client, job_id)
    assert record is not None and record.finished_at is not None
    read = source.read()
    assert (read.completions, read.service_times) == (1, ())
    assert read.latencies == (record.finished_at - record.submitted_at,)
    assert source.history(3600) == ArrivalHistory(arrival_times=(record.submitted_at,), service_times=())
    source.close()


@dataclass
class _Recorder:
    """A policy that holds and records what it was shown: the subject here is the arrivals count."""

    seen: list[Snapshot] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "recorder"

    def decide(self, snapshot: Snapshot) -> Decision:
        self.seen.append(snapshot)
        return Decision(snapshot.current_replicas, "hold")


def test_a_redis_restarted_from_an_older_snapshot_does_not_count_the_whole_counter_as_arrivals(
    valkey_factory: Callable[..., ValkeyServer],
) -> None:
    """The server crashes after its last RDB save; it comes back with the list's counter 20 behind."""
    server = valkey_factory()
    client = redis.Redis.from_url(server.url)
    client.set("celery:pushed", 100_000)  # a week of traffic
    client.rpush("celery", "a", "b")
    clock = Clock()
    source = ListSource(redis.Redis.from_url(server.url), "celery", "celery:pushed", clock=clock)
    policy = _Recorder()
    settings = LoopSettings(WorkloadSpec(tick_seconds=5.0))
    loop = TargetLoop("t", source, MemoryTarget(clock), policy, settings, clock=clock)
    loop.tick()
    client.save()  # the last snapshot before the crash
    client.incrby("celery:pushed", 20)
    clock.advance()
    loop.tick()
    assert server.proc is not None
    server.proc.kill()  # no shutdown save: the restart loads the snapshot
    server.proc.wait()
    server.proc = None
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.get("celery:pushed") == b"100000"
    client.incr("celery:pushed")  # one real arrival since the restart
    client.rpush("celery", "c")
    for _ in range(2):  # the first read after the crash may meet the dead connection and hold
        clock.advance()
        loop.tick()
    fresh = [s.arrivals for s in policy.seen if not s.stale]
    assert fresh[:2] == [0, 20]
    assert fresh[2:] in ([1, 0], [1])  # not 100,001 arrivals in one tick (straight to max_replicas)
    source.close()
    client.close()


def test_a_flushed_or_negative_list_counter_never_makes_negative_arrivals(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The arrivals count reaches the decision log, not only the policy: it is never negative.

    A FLUSHALL restarts the counter from zero; an application that DECRs its push counter on pop
    (an ``arrivals_key`` that is really a gauge) takes it below zero.
    """
    clock = Clock()
    source = ListSource(redis.Redis.from_url(redis_url), "celery", "celery:pushed", clock=clock)
    policy = _Recorder()
    loop = TargetLoop(
        "t", source, MemoryTarget(clock), policy, LoopSettings(WorkloadSpec(tick_seconds=5.0)), clock=clock
    )

    def tick() -> None:
        clock.advance()
        loop.tick()

    redis_client.set("celery:pushed", 500)
    redis_client.rpush("celery", "a", "b")
    with caplog.at_level(logging.INFO, logger="autoscaler.decision"):
        tick()
        redis_client.flushall()  # Redis lost its data: the counter restarts from 0
        redis_client.incrby("celery:pushed", 3)
        redis_client.rpush("celery", "c", "d", "e")
        tick()
        redis_client.decrby("celery:pushed", 7)  # popped and DECR'd: -4
        tick()
        redis_client.decrby("celery:pushed", 5)  # -9, two more waiting
        redis_client.rpush("celery", "f", "g")
        tick()
    assert int(redis_client.get("celery:pushed") or 0) == -9
    seen = [s.arrivals for s in policy.seen]
    logged = [json.loads(JsonFormatter().format(r))["arrivals"] for r in caplog.records]
    assert seen == logged == [0, 3, 0, 2]
    source.close()
