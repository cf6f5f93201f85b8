"""The job protocol against a real Valkey server: every transition, both client flavours."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobqueue import (
    IdempotencyKeyReusedError,
    JobStatus,
    Keyspace,
    Priority,
    Settings,
    WorkerInfo,
    WorkerState,
    aio,
)
from jobqueue import consumer as jq_consumer
from jobqueue import sync as jq
from jobqueue.binding import bind_sync
from jobqueue.consumer import Outcome
from jobqueue.ops import bind_idempotency_key, request_fingerprint
from jobqueue.scripts import SUBMIT
from jobqueue.types import Entry
from tests.support.proxy import ReplyDropper
from tests.support.valkey import ValkeyServer

pytestmark = pytest.mark.integration

Q = "resnet:v1"
KS = Keyspace()


def take(r: redis.Redis, consumer: str = "w1", queue: str = Q) -> Entry:
    entries = jq.fetch(r, queue, consumer, block_ms=50)
    assert len(entries) == 1, entries
    return entries[0]


def run_once(
    r: redis.Redis, outcome: Outcome, payload: Any, consumer: str = "w1", **kw: Any
) -> JobStatus | None:
    entry = take(r, consumer)
    started = jq.start(r, entry, consumer, **kw)
    assert started.job is not None, started
    return jq.finish(r, entry, consumer, outcome, payload, 0.25, **kw)


@pytest.fixture(params=["resp2-bytes", "resp2-str", "resp3-str"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[redis.Redis]:
    """Every caller setting the protocol must tolerate (replies are parsed raw)."""
    flavours: dict[str, dict[str, Any]] = {
        "resp2-bytes": {},
        "resp2-str": {"decode_responses": True},
        "resp3-str": {"decode_responses": True, "protocol": 3},
    }
    options = flavours[request.param]
    r = redis.Redis.from_url(redis_url, **options)
    yield r
    r.close()


def test_submit_get_and_run_to_success(client: redis.Redis) -> None:
    sub = jq.submit_job(client, Q, {"text": "héllo"}, metadata={"trace": "t1"})
    assert sub.created
    job = jq.get_job(client, sub.job_id)
    assert job is not None
    assert (job.status, job.model, job.version, job.input, job.metadata) == (
        JobStatus.QUEUED,
        "resnet",
        "v1",
        {"text": "héllo"},
        {"trace": "t1"},
    )
    assert job.priority is Priority.NORMAL and job.attempts == 0 and job.started_at is None

    entry = take(client)
    assert entry.job_id == sub.job_id
    started = jq.start(client, entry, "w1")
    assert started.job is not None
    assert (started.job.status, started.job.attempts, started.job.worker) == (JobStatus.RUNNING, 1, "w1")
    assert jq.finish(client, entry, "w1", Outcome.SUCCEEDED, {"output": 42}, 0.5) is JobStatus.SUCCEEDED

    done = jq.get_job(client, sub.job_id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.output == {"output": 42}
    assert done.error is None and done.finished_at is not None and done.started_at is not None
    assert 0 < client.ttl(KS.job(sub.job_id)) <= Settings().result_ttl
    assert client.xlen(KS.queue(Q).stream) == 0  # acked entries are deleted
    stats = jq.read_queue_stats(client, Q)
    assert (stats.waiting, stats.in_flight, stats.arrivals_total) == (0, 0, 1)
    assert [(c.job_id, c.duration, c.status) for c in stats.completions] == [
        (sub.job_id, 0.5, JobStatus.SUCCEEDED)
    ]
    # The completion carries the job's submission time, so its latency needs no record read.
    (completion,) = stats.completions
    assert completion.submitted_at == done.submitted_at and completion.finished_at == done.finished_at
    assert completion.latency == done.finished_at - done.submitted_at
    assert jq.list_queues(client) == [Q]


def test_non_ascii_text_takes_its_utf8_size_in_redis_and_reads_back(client: redis.Redis) -> None:
    """Stored as ASCII escapes, 100 KiB of é took 600 KiB of the job's hash, and as much again for
    an output that echoed it."""
    body = "é" * 100_000 + " 日本 \U0001f600"
    sub = jq.submit_job(client, Q, {"text": body})
    entry = take(client)
    assert jq.start(client, entry, "w1").job is not None
    assert jq.finish(client, entry, "w1", Outcome.SUCCEEDED, {"echo": body}, 0.5) is JobStatus.SUCCEEDED
    size = len(body.encode("utf-8"))
    assert client.hstrlen(KS.job(sub.job_id), "input") == size + len('{"text":""}')
    assert client.hstrlen(KS.job(sub.job_id), "output") == size + len('{"echo":""}')
    done = jq.get_job(client, sub.job_id)
    assert done is not None and done.input == {"text": body} and done.output == {"echo": body}


def test_unknown_job_is_none(redis_client: redis.Redis) -> None:
    assert jq.get_job(redis_client, "nope") is None
    assert jq.cancel_job(redis_client, "nope") is None


def test_input_must_be_json_and_nothing_is_written(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError):
        jq.submit_job(redis_client, Q, {"x": object()})
    with pytest.raises(ValueError, match="invalid queue"):
        jq.submit_job(redis_client, "bad queue", 1)
    assert redis_client.dbsize() == 0


def test_high_priority_is_served_first(redis_client: redis.Redis) -> None:
    normal = [jq.submit_job(redis_client, Q, i).job_id for i in range(3)]
    high = jq.submit_job(redis_client, Q, "urgent", priority=Priority.HIGH).job_id
    order = [take(redis_client).job_id for _ in range(4)]
    assert order == [high, *normal]
    assert jq.read_queue_stats(redis_client, Q).in_flight == 4


def test_idempotency_key_returns_the_first_job(redis_client: redis.Redis) -> None:
    first = jq.submit_job(redis_client, Q, {"a": 1, "b": 2}, idempotency_key="k", metadata={"m": 1})
    again = jq.submit_job(redis_client, Q, {"b": 2, "a": 1}, idempotency_key="k", metadata={"m": 1})
    other = jq.submit_job(redis_client, Q, 3, idempotency_key="k2")
    assert (again.job_id, again.created, first.created) == (first.job_id, False, True)
    assert (first.status, again.status) == (JobStatus.QUEUED, JobStatus.QUEUED)
    assert other.job_id != first.job_id
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.arrivals_total, stats.waiting) == (2, 2)
    assert redis_client.ttl(KS.queue(Q).idempotency("k")) > 0


def test_a_match_reports_the_status_its_job_is_in_now(redis_client: redis.Redis) -> None:
    """A retry of a job that has run since was answered as if it were still queued."""
    first = jq.submit_job(redis_client, Q, 1, idempotency_key="k")
    entry = take(redis_client, "w")
    jq.start(redis_client, entry, "w")
    assert jq.submit_job(redis_client, Q, 1, idempotency_key="k").status is JobStatus.RUNNING
    jq.finish(redis_client, entry, "w", Outcome.SUCCEEDED, "ok", 0.1)
    again = jq.submit_job(redis_client, Q, 1, idempotency_key="k")
    assert (again.job_id, again.created, again.status) == (first.job_id, False, JobStatus.SUCCEEDED)
    jq.submit_job(redis_client, Q, 2, job_id="mine")
    jq.cancel_job(redis_client, "mine")
    assert jq.submit_job(redis_client, Q, 2, job_id="mine").status is JobStatus.CANCELLED


@pytest.mark.parametrize(
    "change",
    [{"input": 2}, {"priority": Priority.HIGH}, {"metadata": {"m": 2}}, {"fingerprint": "other"}],
    ids=["input", "priority", "metadata", "fingerprint"],
)
def test_an_idempotency_key_reused_for_another_request_is_refused(
    redis_client: redis.Redis, change: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"input": 1, "priority": Priority.NORMAL, "metadata": {"m": 1}}
    first = jq.submit_job(redis_client, Q, idempotency_key="k", **request)
    before = redis_client.dbsize()
    with pytest.raises(IdempotencyKeyReusedError) as exc:
        jq.submit_job(redis_client, Q, idempotency_key="k", **{**request, **change})
    assert (exc.value.key, exc.value.job_id) == ("k", first.job_id)
    assert redis_client.dbsize() == before  # no job record, no new stream
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.arrivals_total, stats.waiting) == (1, 1)
    assert jq.submit_job(redis_client, Q, idempotency_key="k", **request).job_id == first.job_id


def test_idempotency_scopes_are_separate_namespaces(redis_client: redis.Redis) -> None:
    a = jq.submit_job(redis_client, Q, 1, idempotency_key="k", idempotency_scope="tenant-a")
    b = jq.submit_job(redis_client, Q, 2, idempotency_key="k", idempotency_scope="tenant-b")
    plain = jq.submit_job(redis_client, Q, 3, idempotency_key="k")
    assert a.created and b.created and plain.created
    assert len({a.job_id, b.job_id, plain.job_id}) == 3
    again = jq.submit_job(redis_client, Q, 1, idempotency_key="k", idempotency_scope="tenant-a")
    assert (again.job_id, again.created) == (a.job_id, False)
    record = redis_client.hgetall(KS.queue(Q).idempotency("k", "tenant-b"))
    assert record[b"job"] == b.job_id.encode() and len(record[b"fingerprint"]) == 64


def test_an_idempotency_record_of_the_old_format_still_matches(redis_client: redis.Redis) -> None:
    # Before fingerprints, the record was a plain string holding the job id (SET NX EX); its request
    # is unknown, so any request with the key gets that job, as it did then, instead of an error.
    old = jq.submit_job(redis_client, Q, 1, job_id="old-job")
    redis_client.set(KS.queue(Q).idempotency("k"), old.job_id, ex=3600)
    again = jq.submit_job(redis_client, Q, "anything", idempotency_key="k")
    assert (again.job_id, again.created) == ("old-job", False)
    assert jq.read_queue_stats(redis_client, Q).arrivals_total == 1


def test_binding_a_key_to_an_existing_job_answers_its_retries_with_that_job(
    redis_client: redis.Redis,
) -> None:
    """``bind_idempotency_key``: a request answered with an earlier job (a cache hit) binds its key
    as a submission would have. It binds only an unused key to a job that exists, and a bound key
    then decides every submission that carries it."""
    bind = bind_sync(bind_idempotency_key)
    cached = jq.submit_job(redis_client, Q, "cat.jpg")
    request = request_fingerprint("default", "v1", "cat.jpg", "normal", None)
    assert bind(redis_client, Q, "k", cached.job_id, request, "tenant")
    assert bind(redis_client, Q, "k", cached.job_id, request, "tenant")  # again: the same binding
    assert not bind(redis_client, Q, "k", cached.job_id, "another request", "tenant")
    assert not bind(redis_client, Q, "k", "some-other-job", request, "tenant")
    assert not bind(redis_client, Q, "unused", "never-existed", request)  # no job: nothing bound
    assert not redis_client.exists(KS.queue(Q).idempotency("unused"))
    ttl = redis_client.ttl(KS.queue(Q).idempotency("k", "tenant"))
    assert 0 < ttl <= Settings().idempotency_ttl
    kwargs: dict[str, Any] = {"idempotency_key": "k", "idempotency_scope": "tenant", "fingerprint": request}
    retried = jq.submit_job(redis_client, Q, "cat.jpg", **kwargs)
    assert (retried.job_id, retried.created) == (cached.job_id, False)
    with pytest.raises(IdempotencyKeyReusedError):
        jq.submit_job(redis_client, Q, "dog.jpg", **{**kwargs, "fingerprint": "another request"})
    assert jq.read_queue_stats(redis_client, Q).arrivals_total == 1


def test_an_idempotency_key_is_forgotten_once_its_job_expired(redis_client: redis.Redis) -> None:
    """RESULT_TTL (the workers', here 1 s) shorter than IDEMPOTENCY_TTL (a day): the key's record
    outlived its job, and a retry was answered ``created=False`` with the id of a job that no longer
    existed (404). A key now counts only while its job does; then the request is a new one."""
    short = Settings(result_ttl=1)
    same = jq.submit_job(redis_client, Q, 1, idempotency_key="same")
    other = jq.submit_job(redis_client, Q, 1, idempotency_key="other")
    legacy = jq.submit_job(redis_client, Q, 1, job_id="legacy-job")
    redis_client.set(KS.queue(Q).idempotency("legacy"), legacy.job_id, ex=3600)  # the old format
    for _ in range(3):
        assert run_once(redis_client, Outcome.SUCCEEDED, "done", settings=short) is JobStatus.SUCCEEDED
    deadline = time.monotonic() + 5
    while any(jq.get_job(redis_client, s.job_id) for s in (same, other, legacy)):
        assert time.monotonic() < deadline, "the finished jobs did not expire"
        time.sleep(0.05)
    assert redis_client.ttl(KS.queue(Q).idempotency("same")) > 3600  # the record outlived its job
    again = jq.submit_job(redis_client, Q, 1, idempotency_key="same")
    changed = jq.submit_job(redis_client, Q, 2, idempotency_key="other")  # not refused: the key is free
    anything = jq.submit_job(redis_client, Q, "anything", idempotency_key="legacy")
    for new, old in ((again, same), (changed, other), (anything, legacy)):
        assert new.created and new.job_id != old.job_id
        job = jq.get_job(redis_client, new.job_id)
        assert job is not None and job.status is JobStatus.QUEUED
    retry = jq.submit_job(redis_client, Q, 1, idempotency_key="same")  # the key now names the new job
    assert (retry.job_id, retry.created) == (again.job_id, False)
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.arrivals_total, stats.waiting) == (6, 3)


def test_priority_may_be_given_as_its_string_value(redis_client: redis.Redis) -> None:
    normal = jq.submit_job(redis_client, Q, 1).job_id
    high = jq.submit_job(redis_client, Q, 2, priority="high").job_id
    job = jq.get_job(redis_client, high)
    assert job is not None and job.priority is Priority.HIGH
    assert [take(redis_client).job_id for _ in range(2)] == [high, normal]  # on the high stream
    with pytest.raises(ValueError, match=r"priority must be one of 'normal', 'high', got 'urgent'"):
        jq.submit_job(redis_client, Q, 3, priority="urgent")
    assert jq.read_queue_stats(redis_client, Q).arrivals_total == 2


def test_caller_chosen_job_id_is_not_overwritten(redis_client: redis.Redis) -> None:
    assert jq.submit_job(redis_client, Q, 1, job_id="mine").created
    again = jq.submit_job(redis_client, Q, 2, job_id="mine")
    assert (again.job_id, again.created) == ("mine", False)
    job = jq.get_job(redis_client, "mine")
    assert job is not None and job.input == 1
    assert jq.read_queue_stats(redis_client, Q).arrivals_total == 1


@pytest.mark.parametrize(
    "how",
    [{}, {"job_id": "mine"}, {"idempotency_key": "k"}, {"idempotency_key": "k", "job_id": "mine"}],
    ids=["plain", "caller-chosen-id", "idempotency-key", "both"],
)
def test_a_submission_whose_reply_was_lost_is_told_it_created_its_job(
    redis_client: redis.Redis, how: dict[str, Any]
) -> None:
    """The script ran, its reply was lost with the connection, and redis-py reconnected and sent
    it again by itself. The resend found the job just written (by its id, or by its idempotency
    key) and answered ``created=False`` to the only request that created it. A later submission
    of the same request is a different one, and is told the job is not its own."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.script_load(SUBMIT.source)  # so the dropped reply is the script's, not NOSCRIPT
    with ReplyDropper(port) as proxy:
        # One resend after a connection error, as the API's and the worker's clients are set up.
        lossy = redis.Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 1))
        try:
            proxy.drop_reply_to(SUBMIT.sha.encode())
            first = jq.submit_job(lossy, Q, 1, **how)
            assert proxy.dropped.is_set()
            again = jq.submit_job(lossy, Q, 1, **how) if how else None  # plain: a new job
        finally:
            lossy.close()
    assert (first.created, first.status) == (True, JobStatus.QUEUED)
    if again is not None:
        assert (again.job_id, again.created) == (first.job_id, False)
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.arrivals_total, stats.waiting) == (1, 1)


def test_a_request_token_names_the_submission_that_created_the_job(redis_client: redis.Redis) -> None:
    """What a resend looks like to the script: the same call again, job id and token included.
    Only the request whose token the job carries is told it created the job; another request with
    the same idempotency key (or the same caller-chosen id) is a duplicate."""
    request: dict[str, Any] = {"idempotency_key": "k", "job_id": "job-1"}
    first = jq.submit_job(redis_client, Q, 1, **request, request_token="req-1")
    resent = jq.submit_job(redis_client, Q, 1, **request, request_token="req-1")
    other = jq.submit_job(redis_client, Q, 1, **request, request_token="req-2")
    other_id = jq.submit_job(redis_client, Q, 1, idempotency_key="k", request_token="req-1")
    assert (first.created, resent.created, other.created, other_id.created) == (True, True, False, False)
    assert first.job_id == resent.job_id == other.job_id == other_id.job_id == "job-1"
    mine = jq.submit_job(redis_client, Q, 2, job_id="mine", request_token="req-3")
    mine_resent = jq.submit_job(redis_client, Q, 2, job_id="mine", request_token="req-3")
    mine_other = jq.submit_job(redis_client, Q, 2, job_id="mine", request_token="req-4")
    assert (mine.created, mine_resent.created, mine_other.created) == (True, True, False)
    assert jq.read_queue_stats(redis_client, Q).arrivals_total == 2
    # A resend that finds its job already taken by a worker reports the status it is in now.
    jq.start(redis_client, take(redis_client), "w1")
    late = jq.submit_job(redis_client, Q, 1, **request, request_token="req-1")
    assert (late.created, late.status) == (True, JobStatus.RUNNING)
    with pytest.raises(ValueError, match="request_token"):
        jq.submit_job(redis_client, Q, 3, request_token="")


def test_cancel_queued_job_is_skipped_by_workers(redis_client: redis.Redis) -> None:
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    assert jq.cancel_job(redis_client, job_id) is JobStatus.CANCELLED
    assert jq.cancel_job(redis_client, job_id) is JobStatus.CANCELLED  # idempotent
    entry = take(redis_client)
    assert jq.start(redis_client, entry, "w1").skipped == "cancelled"
    assert redis_client.xlen(KS.queue(Q).stream) == 0
    assert jq.read_queue_stats(redis_client, Q).in_flight == 0
    job = jq.get_job(redis_client, job_id)
    assert job is not None and job.status is JobStatus.CANCELLED and job.attempts == 0


def test_cancel_running_job_is_refused(redis_client: redis.Redis) -> None:
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    jq.start(redis_client, take(redis_client), "w1")
    assert jq.cancel_job(redis_client, job_id) is JobStatus.RUNNING


def test_errors_retry_then_dead_letter_with_error_kept(redis_client: redis.Redis) -> None:
    settings = Settings(max_attempts=2)
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    assert run_once(redis_client, Outcome.ERROR, "boom 1", settings=settings) is JobStatus.QUEUED
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 1, "boom 1")
    assert run_once(redis_client, Outcome.ERROR, "boom 2", settings=settings) is JobStatus.DEAD
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts, job.error) == (JobStatus.DEAD, 2, "boom 2")
    [dead] = jq.read_dead_letters(redis_client, Q)
    assert (dead.job_id, dead.attempts, dead.error) == (job_id, 2, "boom 2")
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight, stats.arrivals_total) == (0, 0, 1)  # a retry is no arrival
    assert [c.status for c in stats.completions] == [JobStatus.QUEUED, JobStatus.DEAD]
    retried, dead_letter = stats.completions
    assert retried.submitted_at == dead_letter.submitted_at == job.submitted_at
    assert retried.latency is None  # a retry is no answer yet; the dead letter is the final one
    assert job.finished_at is not None
    assert dead_letter.latency == pytest.approx(job.finished_at - job.submitted_at, abs=1e-3)
    assert dead_letter.latency is not None and 0 < dead_letter.latency < 60


def test_permanent_failure_is_not_retried(redis_client: redis.Redis) -> None:
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    assert run_once(redis_client, Outcome.FAILED, "bad input") is JobStatus.FAILED
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.error, job.attempts) == (JobStatus.FAILED, "bad input", 1)
    assert jq.fetch(redis_client, Q, "w1", block_ms=10) == []


def test_reclaim_after_visibility_timeout_counts_the_attempt(redis_client: redis.Redis) -> None:
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    lost = take(redis_client, "dead-worker")
    jq.start(redis_client, lost, "dead-worker")
    assert jq.reclaim(redis_client, Q, "w2", 5_000) is None  # not idle long enough
    time.sleep(0.12)
    entry = jq.reclaim(redis_client, Q, "w2", 100)
    assert entry is not None and entry.job_id == job_id
    started = jq.start(redis_client, entry, "w2")
    assert started.job is not None and started.job.attempts == 2
    assert started.job.error is not None and "dead-worker" in started.job.error
    # The first worker wakes up late: its result is discarded and w2's delivery stays pending.
    assert jq.finish(redis_client, lost, "dead-worker", Outcome.SUCCEEDED, "late", 1.0) is None
    assert jq.read_queue_stats(redis_client, Q).in_flight == 1
    assert jq.finish(redis_client, entry, "w2", Outcome.SUCCEEDED, "ok", 1.0) is JobStatus.SUCCEEDED
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.output, job.attempts, job.worker, job.error) == ("ok", 2, "w2", None)


def test_own_pending_finds_a_delivery_its_consumer_never_learned_of(redis_client: redis.Redis) -> None:
    """A read whose reply was lost leaves its entry pending under the reader: own_pending finds it
    (high priority first), and nothing once every entry was run; other consumers' are not its own."""
    assert jq.own_pending(redis_client, Q, "w") == []  # no group yet
    normal = jq.submit_job(redis_client, Q, "normal").job_id
    high = jq.submit_job(redis_client, Q, "high", priority=Priority.HIGH).job_id
    jq.submit_job(redis_client, Q, "someone else's")
    taken = [e.job_id for _ in range(2) for e in jq.fetch(redis_client, Q, "w", block_ms=50)]
    assert taken == [high, normal]  # delivered to w; suppose both replies were lost
    take(redis_client, "other")
    orphans = jq.own_pending(redis_client, Q, "w")
    assert [e.job_id for e in orphans] == [high, normal]
    for entry in orphans:
        jq.start(redis_client, entry, "w")
        assert jq.finish(redis_client, entry, "w", Outcome.SUCCEEDED, "ok", 0.1) is JobStatus.SUCCEEDED
    assert jq.own_pending(redis_client, Q, "w") == []


def make_idle(r: redis.Redis, entry: Entry, ms: int) -> None:
    """Backdate ``entry``'s last delivery by ``ms`` (its holder stays), as if it stopped renewing."""
    r.xclaim(entry.stream, "workers", entry_holder(r, entry), 0, [entry.entry_id], idle=ms, justid=True)


def entry_holder(r: redis.Redis, entry: Entry) -> str:
    [row] = r.xpending_range(entry.stream, "workers", entry.entry_id, entry.entry_id, 1)
    consumer = row["consumer"]
    return consumer.decode() if isinstance(consumer, bytes) else str(consumer)


def test_reclaim_reaches_an_idle_entry_behind_many_live_ones(redis_client: redis.Redis) -> None:
    """XAUTOCLAIM looks at ten pending entries per claim of one: the idle entry sits behind 25 held
    by a live worker, so only a scan that continues from its cursor ever gets to it."""
    live_ids = [jq.submit_job(redis_client, Q, i).job_id for i in range(25)]
    lost_id = jq.submit_job(redis_client, Q, "lost").job_id
    live = [take(redis_client, "live") for _ in live_ids]
    lost = take(redis_client, "dead-worker")
    assert [e.job_id for e in live] == live_ids and lost.job_id == lost_id
    make_idle(redis_client, lost, 60_000)

    cursor = jq_consumer.ReclaimCursor()
    got = [jq.reclaim(redis_client, Q, "w2", 30_000, cursor=cursor, max_batches=1) for _ in range(4)]
    assert got[:2] == [None, None]  # entries 1-10, then 11-20: all live
    assert got[2] is not None and (got[2].entry_id, got[2].job_id) == (lost.entry_id, lost_id)
    assert got[3] is None  # the lap ended and restarted at the head: still nothing idle there
    assert entry_holder(redis_client, lost) == "w2"

    # The cursor wraps: an entry that goes idle behind it is found on the next lap.
    make_idle(redis_client, live[4], 60_000)
    again = [jq.reclaim(redis_client, Q, "w2", 30_000, cursor=cursor, max_batches=1) for _ in range(4)]
    assert [e.entry_id for e in again if e is not None] == [live[4].entry_id]
    # Entries of the live worker are never taken, however many times the list is scanned.
    for _ in range(10):
        assert jq.reclaim(redis_client, Q, "w2", 30_000, cursor=cursor) is None
    assert [entry_holder(redis_client, e) for e in live] == ["live"] * 4 + ["w2"] + ["live"] * 20


def test_reclaim_without_a_cursor_scans_several_batches(redis_client: redis.Redis) -> None:
    """A one-off caller keeps no cursor: one call still reaches past the first ten entries."""
    for i in range(26):
        jq.submit_job(redis_client, Q, i)
    entries = [take(redis_client, "live") for _ in range(26)]
    make_idle(redis_client, entries[-1], 60_000)
    assert jq.reclaim(redis_client, Q, "w2", 30_000, max_batches=2) is None  # 20 entries looked at
    got = jq.reclaim(redis_client, Q, "w2", 30_000)
    assert got is not None and got.entry_id == entries[-1].entry_id


def test_a_delivery_reclaimed_before_it_started_cannot_take_the_job_back(redis_client: redis.Redis) -> None:
    """Two entries fetched together: the second waits unrenewed while the first runs, and another
    worker reclaims it. The first worker's late START must leave the job with its new holder."""
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    waiting = take(redis_client, "w1")
    time.sleep(0.06)
    entry = jq.reclaim(redis_client, Q, "w2", 50)
    assert entry is not None and entry.entry_id == waiting.entry_id
    started = jq.start(redis_client, entry, "w2")
    assert started.job is not None and started.job.attempts == 1
    assert jq.start(redis_client, waiting, "w1").skipped == "not-held"
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.worker, job.attempts, job.error) == (
        JobStatus.RUNNING,
        "w2",
        1,
        None,
    )
    assert jq.read_queue_stats(redis_client, Q).in_flight == 1  # w2's delivery is untouched
    assert jq.finish(redis_client, entry, "w2", Outcome.SUCCEEDED, "ok", 1.0) is JobStatus.SUCCEEDED


def test_starting_renews_the_lease_of_an_entry_that_waited(redis_client: redis.Redis) -> None:
    """The entry's idle clock ran while it waited behind another job: START resets it, so the
    job is not reclaimable the moment it begins."""
    jq.submit_job(redis_client, Q, 1)
    entry = take(redis_client, "w1")
    time.sleep(0.3)
    assert jq.start(redis_client, entry, "w1").job is not None
    assert jq.reclaim(redis_client, Q, "w2", 250) is None


def test_a_retried_start_with_the_same_token_is_the_same_attempt(redis_client: redis.Redis) -> None:
    """START's reply can be lost after the script ran; the worker's retry carries the same token
    and must get the running attempt back, not count a second one."""
    settings = Settings(max_attempts=1)  # an extra count would dead-letter the job outright
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    entry = take(redis_client, "w1")
    first = jq.start(redis_client, entry, "w1", token="t-1", settings=settings)
    again = jq.start(redis_client, entry, "w1", token="t-1", settings=settings)
    assert first.job is not None and first.job.attempts == 1 and first.job.status is JobStatus.RUNNING
    assert again == first
    assert jq.get_job(redis_client, job_id) == first.job
    assert jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, "ok", 0.5) is JobStatus.SUCCEEDED
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts, job.output) == (JobStatus.SUCCEEDED, 1, "ok")
    [completion] = jq.read_queue_stats(redis_client, Q).completions  # one attempt, one completion
    assert completion.status is JobStatus.SUCCEEDED


def test_a_start_with_another_token_is_a_new_attempt(redis_client: redis.Redis) -> None:
    """A new delivery of a running job (the process restarted under the same name and reclaimed its
    own entry) brings a new token: the lost attempt counts, as without tokens."""
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    entry = take(redis_client, "w1")
    assert jq.start(redis_client, entry, "w1", token="before-restart").job is not None
    started = jq.start(redis_client, entry, "w1", token="after-restart")
    assert started.job is not None and started.job.attempts == 2
    assert started.job.error is not None and "stopped heartbeating" in started.job.error
    assert jq.start(redis_client, entry, "w1", token="after-restart") == started
    assert jq.start(redis_client, entry, "w1").job is not None  # no token: never deduplicated
    assert jq.start(redis_client, entry, "w1", settings=Settings(max_attempts=3)).skipped == "dead"
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts) == (JobStatus.DEAD, 3)


@pytest.mark.parametrize("entry", [None, ""], ids=["entry-deleted", "entry-empty"])
def test_a_record_without_its_entry_is_failed_at_start_naming_the_field(
    redis_client: redis.Redis, entry: str | None
) -> None:
    """Without ``entry`` a job could not be finished: a deleted field let START run it and every
    FINISH was discarded as "lost" (reclaimed, run again, dead-lettered as a dead worker's); an empty
    one made START drop the delivery as stale, leaving the job queued forever with no entry. Both
    now end at the first START: failed, naming the field, acknowledged, never run."""
    job_id = jq.submit_job(redis_client, Q, {"x": 1}).job_id
    if entry is None:
        redis_client.hdel(KS.job(job_id), "entry")
    else:
        redis_client.hset(KS.job(job_id), "entry", entry)
    delivery = take(redis_client)
    started = jq.start(redis_client, delivery, "w1", token="t1")
    assert (started.job, started.skipped) == (None, "failed")
    job = jq.get_job(redis_client, job_id)
    assert job is not None and (job.status, job.attempts) == (JobStatus.FAILED, 0)
    assert job.error == "malformed job record: field 'entry' is missing"
    assert redis_client.ttl(KS.job(job_id)) > 0  # terminal: expires as usual
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight) == (0, 0)  # acknowledged: never redelivered
    assert [c.status for c in stats.completions] == [JobStatus.FAILED]
    assert jq.reclaim(redis_client, Q, "w2", 0) is None
    assert jq.read_dead_letters(redis_client, Q) == []


def test_heartbeat_lease_prevents_reclaim(redis_client: redis.Redis) -> None:
    jq.submit_job(redis_client, Q, 1)
    entry = take(redis_client)
    jq.start(redis_client, entry, "w1")
    # 1.2 s of heartbeats against a 400 ms visibility timeout: without the lease renewal the entry
    # would be reclaimable three times over; the 400 ms leave room for a stall on a loaded machine.
    for _ in range(4):
        time.sleep(0.3)
        info = WorkerInfo("w1", Q, WorkerState.BUSY, time.time(), time.time(), job=entry.job_id)
        assert jq.heartbeat(redis_client, info, lease=entry) is True
    assert jq.reclaim(redis_client, Q, "w2", 400) is None
    # Another consumer's heartbeat cannot renew (or steal) w1's entry.
    thief = WorkerInfo("w2", Q, WorkerState.IDLE, time.time(), time.time())
    assert jq.heartbeat(redis_client, thief, lease=entry) is False


def test_worker_lost_on_last_attempt_is_dead_lettered(redis_client: redis.Redis) -> None:
    settings = Settings(max_attempts=1)
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    jq.start(redis_client, take(redis_client, "dead-worker"), "dead-worker", settings=settings)
    time.sleep(0.06)
    entry = jq.reclaim(redis_client, Q, "w2", 50)
    assert entry is not None
    assert jq.start(redis_client, entry, "w2", settings=settings).skipped == "dead"
    [dead] = jq.read_dead_letters(redis_client, Q)
    assert dead.job_id == job_id and "dead-worker" in dead.error
    stats = jq.read_queue_stats(redis_client, Q)
    assert stats.in_flight == 0
    # Nobody timed the lost attempt, but the job's final answer is on the completions stream, so
    # whoever counts latencies off it (the autoscaler's SLO counters) sees this job end too.
    [completion] = stats.completions
    job = jq.get_job(redis_client, job_id)
    assert job is not None and job.finished_at is not None
    assert (completion.job_id, completion.status, completion.worker, completion.duration) == (
        job_id,
        JobStatus.DEAD,
        "dead-worker",
        None,
    )
    assert completion.latency == job.finished_at - job.submitted_at


def test_a_queued_job_past_lowered_max_attempts_is_dead_lettered_with_its_final_entry(
    redis_client: redis.Redis,
) -> None:
    """max_attempts lowered while a retry waits: START dead-letters it, and says so on the stream."""
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    three, one = Settings(max_attempts=3), Settings(max_attempts=1)
    assert run_once(redis_client, Outcome.ERROR, "boom", settings=three) is JobStatus.QUEUED
    assert jq.start(redis_client, take(redis_client, "w2"), "w2", settings=one).skipped == "dead"
    retried, final = jq.read_queue_stats(redis_client, Q).completions
    assert (retried.status, retried.latency) == (JobStatus.QUEUED, None)
    assert (final.job_id, final.status, final.duration) == (job_id, JobStatus.DEAD, None)
    job = jq.get_job(redis_client, job_id)
    assert job is not None and job.finished_at is not None
    assert final.latency == pytest.approx(job.finished_at - job.submitted_at, abs=1e-3)
    assert final.latency is not None and 0 < final.latency < 60


def test_queue_stats_counts_and_cursor(redis_client: redis.Redis) -> None:
    ids = [jq.submit_job(redis_client, Q, i).job_id for i in range(5)]
    jq.submit_job(redis_client, Q, "h", priority=Priority.HIGH)
    stats = jq.read_queue_stats(redis_client, Q)
    assert (stats.waiting, stats.in_flight, stats.arrivals_total, stats.waiting_exact) == (6, 0, 6, True)
    assert stats.completions == () and stats.completions_cursor == "0-0"

    a, b = take(redis_client), take(redis_client)
    for e in (a, b):
        jq.start(redis_client, e, "w1")
    jq.finish(redis_client, a, "w1", Outcome.SUCCEEDED, None, 0.75)
    stats = jq.read_queue_stats(redis_client, Q, since=stats.completions_cursor)
    assert (stats.waiting, stats.in_flight, stats.arrivals_total) == (4, 1, 6)
    assert [(c.job_id, c.duration) for c in stats.completions] == [(a.job_id, 0.75)]
    cursor = stats.completions_cursor
    assert jq.read_queue_stats(redis_client, Q, since=cursor).completions == ()
    jq.finish(redis_client, b, "w1", Outcome.SUCCEEDED, None, 1.5)
    later = jq.read_queue_stats(redis_client, Q, since=cursor)
    assert [c.duration for c in later.completions] == [1.5]
    assert b.job_id == ids[0]  # the high one went first

    # A foreign XDEL ahead of the group's cursor makes the lag unknown: the fallback still counts.
    [(first_id, _)] = redis_client.xrange(KS.queue(Q).stream, count=1)  # type: ignore[misc]
    assert first_id is not None
    redis_client.xdel(KS.queue(Q).stream, first_id)
    fallback = jq.read_queue_stats(redis_client, Q)
    assert (fallback.waiting, fallback.in_flight, fallback.waiting_exact) == (3, 0, False)


def test_stats_read_is_two_round_trips_and_lists_live_workers(redis_client: redis.Redis) -> None:
    now = time.time()
    jq.heartbeat(redis_client, WorkerInfo("b", Q, WorkerState.BUSY, now - 5, now, job="j", ready_at=now - 4))
    jq.heartbeat(redis_client, WorkerInfo("a", Q, WorkerState.STARTING, now, now))
    short = Settings(worker_ttl=0.05)
    jq.heartbeat(redis_client, WorkerInfo("gone", Q, WorkerState.IDLE, now - 60, now), settings=short)
    time.sleep(0.1)  # its entry expired: it stopped heartbeating
    stats = jq.read_queue_stats(redis_client, Q)
    assert [(w.name, w.state, w.busy) for w in stats.workers] == [
        ("a", WorkerState.STARTING, False),
        ("b", WorkerState.BUSY, True),
    ]
    assert stats.workers[1].ready_at == pytest.approx(now - 4)
    assert 0 < redis_client.pttl(KS.worker("a")) <= 6000
    jq.deregister(redis_client, "a", Q)
    assert [w.name for w in jq.read_queue_stats(redis_client, Q).workers] == ["b"]


def test_the_worker_set_is_kept_by_the_servers_clock(redis_client: redis.Redis) -> None:
    """Stamped with each writer's clock, a worker whose clock ran a ttl behind was dropped from the
    set by every peer's heartbeat, and a stats read between its own beats missed it (a busy pod
    read as idle). Stamps and pruning now use the server's clock: a worker goes once it stops."""
    now = time.time()
    late = WorkerInfo("late-clock", Q, WorkerState.BUSY, now - 120, now - 60, job="j")
    jq.heartbeat(redis_client, late)
    jq.heartbeat(redis_client, WorkerInfo("a", Q, WorkerState.IDLE, now, now))
    assert [w.name for w in jq.read_queue_stats(redis_client, Q).workers] == ["a", "late-clock"]
    short = Settings(worker_ttl=0.05)
    jq.heartbeat(redis_client, WorkerInfo("gone", Q, WorkerState.IDLE, now, now), settings=short)
    time.sleep(0.1)
    jq.heartbeat(redis_client, WorkerInfo("a", Q, WorkerState.IDLE, now, now), settings=short)
    assert redis_client.zrange(KS.queue(Q).workers, 0, -1) == [b"a"]


def test_empty_queue_stats(redis_client: redis.Redis) -> None:
    stats = jq.read_queue_stats(redis_client, "never:used")
    assert (stats.waiting, stats.in_flight, stats.arrivals_total, stats.workers) == (0, 0, 0, ())


def test_list_queue_stats(redis_client: redis.Redis) -> None:
    redis_client.rpush("celery", "a", "b", "c")
    redis_client.set("celery:arrivals", 7)
    assert jq.read_list_queue_stats(redis_client, "celery").waiting == 3
    with_counter = jq.read_list_queue_stats(redis_client, "celery", "celery:arrivals")
    assert (with_counter.waiting, with_counter.arrivals_total) == (3, 7)
    assert jq.read_list_queue_stats(redis_client, "missing", "missing:n").arrivals_total == 0


def test_scripts_reload_after_script_flush(redis_client: redis.Redis) -> None:
    jq.submit_job(redis_client, Q, 1)
    redis_client.script_flush()
    assert jq.submit_job(redis_client, Q, 2).created
    redis_client.script_flush()
    assert jq.start(redis_client, take(redis_client), "w1").job is not None


def test_consumers_of_dead_workers_are_forgotten(redis_client: redis.Redis) -> None:
    jq.submit_job(redis_client, Q, 1)
    jq.fetch(redis_client, Q, "holder", block_ms=10)
    jq.fetch(redis_client, Q, "empty-handed", block_ms=10)
    time.sleep(0.05)
    # Both consumers exist on both streams; only "holder" on the normal stream holds an entry.
    assert jq.forget_idle_consumers(redis_client, Q, 20) == 3
    names = {c["name"] for c in redis_client.xinfo_consumers(KS.queue(Q).stream, "workers")}
    assert names == {b"holder"}


def test_wait_for_job_times_out_with_latest_state(redis_client: redis.Redis) -> None:
    job_id = jq.submit_job(redis_client, Q, 1).job_id
    t0 = time.monotonic()
    job = jq.wait_for_job(redis_client, job_id, 0.2)
    assert job is not None and job.status is JobStatus.QUEUED
    assert 0.2 <= time.monotonic() - t0 < 1.0


def test_asyncio_flavour(redis_url: str) -> None:
    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(redis_url)
        try:
            sub = await aio.submit_job(r, Q, {"x": 1}, idempotency_key="a")
            assert (await aio.submit_job(r, Q, {"x": 1}, idempotency_key="a")).job_id == sub.job_id
            assert (await aio.read_queue_stats(r, Q)).waiting == 1
            [entry] = await aio.fetch(r, Q, "w1", block_ms=50)
            assert (await aio.start(r, entry, "w1")).job is not None
            waiter = asyncio.create_task(aio.wait_for_job(r, sub.job_id, 5))
            await asyncio.sleep(0.05)
            await aio.finish(r, entry, "w1", Outcome.SUCCEEDED, {"y": 2}, 0.1)
            job = await waiter
            assert job is not None and job.output == {"y": 2}
            other = (await aio.submit_job(r, Q, 2)).job_id
            assert await aio.cancel_job(r, other) is JobStatus.CANCELLED
        finally:
            await r.aclose()

    asyncio.run(scenario())


def test_password_protected_server(valkey_factory: Callable[..., ValkeyServer]) -> None:
    server = valkey_factory(password="s3cret")
    assert server.url.startswith("redis://:s3cret@")
    r = redis.Redis.from_url(server.url)
    try:
        job_id = jq.submit_job(r, Q, 1).job_id
        assert jq.get_job(r, job_id) is not None
    finally:
        r.close()
    anonymous = redis.Redis(port=server.port)
    with pytest.raises(redis.AuthenticationError):
        jq.get_job(anonymous, job_id)
    anonymous.close()
