"""Worker pieces that need no server: configuration, model loading, outcome rules, retry, status."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import redis

from api.config import ApiConfig
from autoscaler.config import StreamSourceConfig
from jobqueue import (
    Entry,
    Job,
    JobStatus,
    Keyspace,
    MalformedJobError,
    Priority,
    Settings,
    WorkerState,
    codec,
)
from jobqueue.consumer import EncodedOutput, Outcome
from jobqueue.errors import describe, misconfigured, remedy
from worker.config import WorkerConfig
from worker.contact import RedisContact
from worker.model import PermanentJobError, ReferenceModel, load_model
from worker.retry import GaveUp, with_retry
from worker.runner import Worker
from worker.status import LiveStatus, process_start_time
from worker.watchdog import JobWatchdog


def test_config_defaults_and_overrides() -> None:
    cfg = WorkerConfig.from_env({"HOSTNAME": "pod-1"})
    assert (cfg.name, cfg.queue, cfg.visibility_timeout, cfg.settings.max_attempts) == (
        "pod-1",
        "default:v1",
        30,
        3,
    )
    assert cfg.model_class == "worker.model:ReferenceModel" and cfg.port == 8080
    assert cfg.job_timeout == 600
    assert WorkerConfig.from_env({"JOB_TIMEOUT": "0.5"}).job_timeout == 0.5
    cfg = WorkerConfig.from_env(
        {
            "HOSTNAME": "p",
            "QUEUE": "llm:v2",
            "MAX_ATTEMPTS": "5",
            "VISIBILITY_TIMEOUT": "4",
            "HEARTBEAT_SECONDS": "1",
        }
    )
    assert (cfg.queue, cfg.settings.max_attempts, cfg.visibility_timeout) == ("llm:v2", 5, 4)
    assert cfg.settings.worker_ttl >= 3 * cfg.heartbeat_seconds


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VISIBILITY_TIMEOUT": "1", "HEARTBEAT_SECONDS": "2"}, "HEARTBEAT_SECONDS < VISIBILITY_TIMEOUT"),
        ({"QUEUE": "bad queue"}, "bad queue"),
        ({"POLL_SECONDS": "x"}, "POLL_SECONDS='x' is not a number"),
        ({"VISIBILITY_TIMEOUT": "nan"}, "VISIBILITY_TIMEOUT must be a finite number"),
        ({"WORKER_TTL": "inf"}, "WORKER_TTL must be a finite number"),
        ({"MAX_ATTEMPTS": "three"}, "MAX_ATTEMPTS='three' is not a whole number"),
        ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS must be >= 1"),
        ({"PORT": "80.5"}, "PORT='80.5' is not a whole number"),
        ({"JOB_TIMEOUT": "0"}, "JOB_TIMEOUT must be a finite number > 0, got '0'"),
        ({"JOB_TIMEOUT": "-5"}, "JOB_TIMEOUT must be a finite number > 0, got '-5'"),
        ({"JOB_TIMEOUT": "ten"}, "JOB_TIMEOUT='ten' is not a number"),
        ({"JOB_TIMEOUT": "inf"}, "JOB_TIMEOUT must be a finite number"),
        ({"KEY_PREFIX": "a b"}, "KEY_PREFIX='a b': must be 1-32 characters"),
    ],
)
def test_config_rejects_nonsense_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        WorkerConfig.from_env(env)


def test_the_worker_reads_the_stream_the_api_writes_and_the_autoscaler_watches() -> None:
    """KEY_PREFIX was read by the API alone: workers built their settings without it and always read
    ``jq:*``, so with KEY_PREFIX on the api and worker Deployments (and ``prefix`` in the autoscaler's
    source, as docs/api.md asks) the API enqueued where no worker read: no job was ever served,
    and the autoscaler scaled idle workers up to its maximum on the growing backlog."""
    env = {"QUEUE": "reference:v1", "KEY_PREFIX": " tenant1 ", "HOSTNAME": "worker-abc"}
    api, worker = ApiConfig.from_env(env), WorkerConfig.from_env(env)
    source = StreamSourceConfig(queue="reference:v1", prefix="tenant1")
    streams = {
        Keyspace(settings.prefix).queue("reference:v1").stream
        for settings in (api.settings, worker.settings, Settings(prefix=source.prefix))
    }
    assert streams == {"tenant1:q:reference:v1:stream"}
    assert WorkerConfig.from_env({"KEY_PREFIX": ""}).settings.prefix == ApiConfig.from_env({}).settings.prefix


def test_reference_model_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_SETUP_SECONDS", "0")
    monkeypatch.setenv("MODEL_PREDICT_SECONDS", "0.01")
    model = load_model("worker.model:ReferenceModel")
    assert isinstance(model, ReferenceModel) and model.predict_seconds == 0.01
    model.setup()
    out = model.predict({"a": 1})
    assert out["input"] == {"a": 1}
    assert (
        out["output"] == f"model inference on instance {model.instance} with input {{'a': 1}} was successful!"
    )
    with pytest.raises(ValueError, match=r"package\.module:ClassName"):
        load_model("no_colon")


def nested(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


class Scripted:
    """A model whose predictions are given by the test."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def setup(self) -> None:
        pass

    def predict(self, input: Any) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    ("result", "outcome", "text"),
    [
        ({"ok": 1}, Outcome.SUCCEEDED, None),
        (PermanentJobError("bad"), Outcome.FAILED, "PermanentJobError: bad"),
        (RuntimeError("flaky"), Outcome.ERROR, "RuntimeError: flaky"),
        ({1, 2}, Outcome.FAILED, "model output is not JSON-serialisable"),
        (
            {"text": "ab\udc80"},  # a byte decoded with surrogateescape: storable, never readable
            Outcome.FAILED,
            "model output is not JSON-serialisable: a string holds a lone UTF-16 surrogate",
        ),
        (
            nested(5000),  # [[[...]]]: a RecursionError in the encoder
            Outcome.FAILED,
            "model output is not JSON-serialisable: maximum recursion depth exceeded",
        ),
    ],
    ids=["ok", "permanent", "retryable", "a-set", "a-surrogate", "nested-too-deep"],
)
def test_outcome_rules(result: Any, outcome: Outcome, text: str | None) -> None:
    worker = Worker(WorkerConfig.from_env({"HOSTNAME": "t"}), Scripted(result))
    got, payload = worker._predict("in")
    assert got is outcome
    if text is not None:
        assert str(payload).startswith(text)
    if outcome is Outcome.SUCCEEDED:  # encoded once, here; finish stores this text
        assert payload == EncodedOutput(codec.dumps(result))


def test_retry_backs_off_then_succeeds_or_gives_up() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise redis.ConnectionError("down")
        return "up"

    assert with_retry(flaky, what="test", first=0.01) == "up" and len(calls) == 3
    drain = threading.Event()
    drain.set()
    with pytest.raises(GaveUp):
        with_retry(
            lambda: (_ for _ in ()).throw(redis.TimeoutError()), what="t", wake=drain, give_up=drain.is_set
        )
    with pytest.raises(redis.ResponseError):  # a wrong request is not retried
        with_retry(lambda: (_ for _ in ()).throw(redis.ResponseError("WRONGTYPE")), what="t")


def test_live_status_transitions() -> None:
    status = LiveStatus("w", "q:v", started_at=time.time() - 2)
    assert (status.state, status.ready) == (WorkerState.STARTING, False)
    assert status.mark_ready() == pytest.approx(2, abs=0.5)
    entry = Entry("q:v", "s", "1-0", "job1")
    status.busy(entry)
    info, lease = status.snapshot()
    assert (info.state, info.job, lease) == (WorkerState.BUSY, "job1", entry)
    status.drain()
    status.idle()
    info, lease = status.snapshot()
    assert (info.state, info.job, lease, status.ready) == (WorkerState.DRAINING, None, None, False)
    assert info.warmup_seconds == pytest.approx(2, abs=0.5)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_between_successes_never_postpone_the_reclaim() -> None:
    """A heartbeat failing at every beat while the job loop's calls succeed: each failure used to
    push the reclaim a visibility timeout away, for ever. Blackouts this short (0.6 s, with a
    visibility timeout of 30 s and beats every second) cannot have let a live lease lapse."""
    clock = Clock()
    contact = RedisContact(visibility_timeout=30, heartbeat_seconds=1, clock=clock)
    contact.reached()
    for _ in range(200):  # 200 s of it
        clock.now += 0.4
        contact.failed()  # the beat
        assert contact.may_reclaim()  # a blackout of 0.4 s so far, in progress
        clock.now += 0.6
        contact.reached()  # the loop's next call
        assert contact.may_reclaim()


def test_a_long_blackout_postpones_the_reclaim_to_a_visibility_timeout_after_it() -> None:
    clock = Clock()
    contact = RedisContact(visibility_timeout=30, heartbeat_seconds=1, clock=clock)
    contact.reached()
    clock.now += 1
    contact.failed()
    clock.now += 27  # 28 s since the last success: a live lease may be 30 s old by its next beat
    assert not contact.may_reclaim()
    contact.failed()  # failures within one blackout do not restart it
    clock.now += 5
    contact.reached()
    clock.now += 29.9
    assert not contact.may_reclaim()
    clock.now += 0.1
    assert contact.may_reclaim()
    # Just shorter than that: no live lease can have reached the visibility timeout.
    contact.reached()
    contact.failed()
    clock.now += 27.9
    contact.reached()
    assert contact.may_reclaim()


def test_a_failure_before_redis_was_ever_reached_is_an_outage_of_unknown_length() -> None:
    """A worker started while Redis was down cannot tell how long it has been: it waits."""
    clock = Clock()
    contact = RedisContact(visibility_timeout=30, heartbeat_seconds=1, clock=clock)
    assert contact.may_reclaim()
    contact.failed()
    clock.now += 0.1
    assert not contact.may_reclaim()
    contact.reached()
    clock.now += 29
    assert not contact.may_reclaim()
    clock.now += 1.1
    assert contact.may_reclaim()


def test_process_start_time_is_in_the_past() -> None:
    assert 0 <= time.time() - process_start_time() < 3600


def test_a_timed_out_call_is_recorded_by_exactly_one_party() -> None:
    """The watchdog and the job loop race when the model returns just at the limit: the status
    lock lets exactly one of them record the attempt, and a given-up lease is no longer renewed."""
    status = LiveStatus("w", "q:v")
    status.mark_ready()
    entry = Entry("q:v", "s", "1-0", "job1")
    status.busy(entry)
    assert status.overdue(60) is None  # not yet
    overdue = status.overdue(0)
    assert overdue is not None and overdue[0] == entry and overdue[1] >= 0
    assert status.overdue(0) is None  # given up once
    assert status.returned() is False  # the late result is not recorded
    info, lease = status.snapshot()
    assert (info.state, info.job, lease, status.ready) == (WorkerState.DRAINING, "job1", None, False)

    status = LiveStatus("w", "q:v")
    status.busy(entry)
    assert status.returned() is True  # returned in time: the clock stops
    assert status.overdue(0) is None
    assert status.snapshot()[1] == entry  # still renewed while the result is being recorded


def test_the_watchdog_reports_an_overdue_call_once() -> None:
    status = LiveStatus("w", "q:v")
    calls: list[tuple[Entry, float]] = []
    done = threading.Event()

    def overdue(entry: Entry, seconds: float) -> None:
        calls.append((entry, seconds))
        done.set()

    dog = JobWatchdog(status, 0.2, overdue)
    dog.start()
    try:
        time.sleep(0.3)
        assert calls == []  # no job, nothing to time
        entry = Entry("q:v", "s", "1-0", "job1")
        status.busy(entry)
        assert done.wait(2)
        dog.join(1)
        assert not dog.is_alive()
        [(got, seconds)] = calls
        # At or past the limit; no upper bound: a loaded machine may wake the watchdog late.
        assert got == entry and seconds >= 0.2
    finally:
        dog.stop()


@pytest.mark.parametrize(
    "refusal",
    [
        redis.ResponseError("MISCONF Valkey is configured to save RDB snapshots, but it's currently unable"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.MasterDownError("Link with MASTER is down and replica-serve-stale-data is 'no'."),
    ],
)
def test_retry_waits_out_a_server_that_refuses_for_now(refusal: redis.RedisError) -> None:
    """A server refusing writes until a save succeeds (MISCONF), full (OOM) or cut off from its
    master recovers by itself: the job loop must wait, not crash and lose the result it holds."""
    calls = 0

    def refused_twice() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise refusal
        return "written"

    assert with_retry(refused_twice, what="test", first=0.001) == "written" and calls == 3


@pytest.mark.parametrize(
    "refusal",
    [
        redis.ResponseError("DB index is out of range"),  # SELECT 99 on a server with 16 databases
        redis.ResponseError("SELECT is not allowed in cluster mode"),
    ],
)
def test_a_database_the_server_lacks_is_a_misconfiguration_not_retried(refusal: redis.RedisError) -> None:
    """Refused at every connection until REDIS_URL changes: neither an outage to retry nor a bug to
    crash on (a traceback and a restart loop, each restart paying the warm-up), but what a worker
    exits on naming REDIS_URL, and what the API answers 503 ``redis_misconfigured``."""
    calls = 0

    def refused() -> str:
        nonlocal calls
        calls += 1
        raise refusal

    with pytest.raises(redis.ResponseError):
        with_retry(refused, what="test", first=0.001)
    assert calls == 1 and misconfigured(refusal)
    assert describe(refusal).startswith(f"refused the database REDIS_URL names ({refusal}")
    assert remedy(refusal).startswith("check the database number in REDIS_URL")
    assert not misconfigured(redis.ResponseError("WRONGTYPE Operation against a key"))


def test_a_drain_requested_while_the_status_lock_is_held_does_not_hang() -> None:
    """SIGTERM's handler runs on the main thread, which may be inside busy()/idle() holding the
    status lock; drain() took that lock again (not re-entrant) and the worker hung until SIGKILL."""
    status = LiveStatus("w", "q:v", started_at=time.time())
    status.mark_ready()
    done = threading.Event()

    def handler_lands_mid_update() -> None:
        with status._lock:  # the job loop's update, interrupted by the signal
            status.drain()
            done.set()

    threading.Thread(target=handler_lands_mid_update, daemon=True).start()
    assert done.wait(5), "drain() blocked on the lock its own thread holds"
    entry = Entry(queue="q:v", stream="s", entry_id="1-0", job_id="j")
    status.busy(entry)  # an update the signal interrupted completes afterwards: still draining
    assert status.state is WorkerState.DRAINING and not status.ready
    assert status.snapshot()[0].state is WorkerState.DRAINING


GOOD_RECORD = codec.job_fields(
    Job(
        id="j1",
        queue="m:v",
        model="m",
        version="v",
        status=JobStatus.RUNNING,
        priority=Priority.NORMAL,
        input={"a": 1},
        submitted_at=1.5,
        attempts=1,
    )
)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input", "{", "field 'input' is malformed ('{'): Expecting property name"),
        ("input", None, "field 'input' is missing"),
        ("id", None, "field 'id' is missing"),
        ("status", "paused", "field 'status' is malformed ('paused'): 'paused' is not a valid JobStatus"),
        ("attempts", "1.5", "field 'attempts' is malformed ('1.5'): invalid literal for int()"),
        ("started_at", "noon", "field 'started_at' is malformed ('noon'): could not convert"),
        ("output", "[" * 100_000, "field 'output' is malformed ('" + "[" * 60 + "...'): maximum recursion"),
        # Bytes that are not UTF-8, as the driver hands them over (surrogateescape): a JSON string
        # or a plain text field took them in, and every later encode (an HTTP answer) failed.
        (
            "input",
            b'"\xc3"'.decode("utf-8", "surrogateescape"),
            "field 'input' is malformed ('\"\\xc3\"'): not valid",
        ),
        (
            "error",
            b"\xff".decode("utf-8", "surrogateescape"),
            "field 'error' is malformed ('\\xff'): not valid UTF-8",
        ),
    ],
)
def test_a_record_that_does_not_decode_names_its_field(field: str, value: str | None, message: str) -> None:
    """The worker fails a job whose record does not decode with this text as the job's error (it
    crashed on a bare KeyError/JSONDecodeError): whoever wrote the record must see what to fix."""
    fields = dict(GOOD_RECORD)
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    with pytest.raises(MalformedJobError) as caught:
        codec.job_from_fields(fields)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.field == field  # for the API's error body
    assert isinstance(caught.value, ValueError)  # as the decode errors it names were (bar KeyError)
