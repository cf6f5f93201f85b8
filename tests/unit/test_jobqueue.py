"""Pure parts of the job protocol: key layout, record codec, reply parsing, the driver's lowering."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.base import BaseParser

from jobqueue import (
    Job,
    JobStatus,
    Keyspace,
    Priority,
    WorkerInfo,
    WorkerState,
    codec,
    queue_name,
    split_queue,
)
from jobqueue.driver import Call, Eval, Sleep, _round_trips, decode
from jobqueue.errors import describe, transient
from jobqueue.ops import _stream_counts, get_job, request_fingerprint, submit_job, wait_for_job
from jobqueue.scripts import SUBMIT

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def test_key_layout() -> None:
    ks = Keyspace()
    qk = ks.queue("resnet:v1")
    assert qk.streams == ("jq:q:resnet:v1:stream:high", "jq:q:resnet:v1:stream")
    assert (qk.arrivals, qk.completions, qk.dead, qk.workers) == (
        "jq:q:resnet:v1:arrivals",
        "jq:q:resnet:v1:completions",
        "jq:q:resnet:v1:dead",
        "jq:q:resnet:v1:workers",
    )
    assert ks.job("abc") == "jq:job:abc" and ks.worker("pod-1") == "jq:worker:pod-1"
    assert Keyspace("x").queues == "x:queues"


def test_idempotency_records_are_named_per_scope() -> None:
    qk = Keyspace().queue("resnet:v1")
    assert qk.idempotency("order:1") == "jq:q:resnet:v1:idem:order:1"  # unscoped: the original name
    assert qk.idempotency("1", scope="ab12") == "jq:q:resnet:v1:idem-by:ab12:1"
    # an unscoped key that looks like a scoped one cannot name its record
    assert qk.idempotency("ab12:1") != qk.idempotency("1", scope="ab12")
    for bad in ("", "a:b", "a b", "x" * 65):
        with pytest.raises(ValueError, match="invalid idempotency scope"):
            qk.idempotency("k", scope=bad)


def test_request_fingerprint_is_of_what_the_client_sent() -> None:
    base = request_fingerprint("resnet", None, {"a": 1, "b": [1, 2]}, "normal", {"x": 1})
    assert base == request_fingerprint("resnet", None, {"b": [1, 2], "a": 1}, Priority.NORMAL, {"x": 1})
    assert request_fingerprint("m", None, 1) == request_fingerprint("m", None, 1, metadata={})
    others = {
        request_fingerprint("resnet", "v1", {"a": 1, "b": [1, 2]}, "normal", {"x": 1}),  # version named
        request_fingerprint("bert", None, {"a": 1, "b": [1, 2]}, "normal", {"x": 1}),
        request_fingerprint("resnet", None, {"a": 1, "b": [2, 1]}, "normal", {"x": 1}),
        request_fingerprint("resnet", None, {"a": 1, "b": [1, 2]}, "high", {"x": 1}),
        request_fingerprint("resnet", None, {"a": 1, "b": [1, 2]}, "normal", {"x": 2}),
    }
    assert len(others) == 5 and base not in others


def test_a_string_with_a_lone_surrogate_is_refused_before_any_command() -> None:
    """Not text: stored through JSON's escapes, every read of the job failed where the text was
    encoded again (the API answered it with a generic 500)."""
    assert codec.dumps(["\U0001f600", "\\ud800"]) == '["\U0001f600","\\\\ud800"]'  # fine
    for bad in ("ab\udc80", {"k\ud800": 1}, ["\ud800\ud800"]):
        with pytest.raises(ValueError, match="lone UTF-16 surrogate"):
            next(submit_job("resnet:v1", bad))


def test_non_ascii_text_is_stored_as_utf8_not_as_escapes() -> None:
    """Escaped, each é took 6 bytes instead of 2: a 1 MiB body of it was 3 MiB in Redis (and 9 MiB
    a job once a model echoed it into its output)."""
    body = "é" * (1 << 20)
    text = codec.dumps({"text": body})
    assert text == '{"text":"' + body + '"}'
    assert len(text.encode("utf-8")) == 2 * (1 << 20) + len('{"text":""}')
    assert codec.dumps(["日本", "\U0001f600", "a\nb\u2028"]) == '["日本","\U0001f600","a\\nb\u2028"]'
    # JSON's own escapes stay (a quote, a backslash, control characters), so the text is still JSON
    assert codec.dumps('"\\\x00') == '"\\"\\\\\\u0000"'


def test_a_record_written_with_ascii_escapes_reads_as_before() -> None:
    """Records stored before the change spell non-ASCII text as \\uXXXX escapes: read the same."""
    job = Job(
        id="j1", queue="m:v1", model="m", version="v1", status=JobStatus.SUCCEEDED,
        priority=Priority.NORMAL, input={"text": "héllo \U0001f600"}, submitted_at=1.0, attempts=1,
        output=["é"], metadata={"who": "zoë"},
    )  # fmt: skip
    fields = codec.job_fields(job)
    assert fields["input"] == '{"text":"héllo \U0001f600"}'
    old = {
        **fields,
        "input": '{"text":"h\\u00e9llo \\ud83d\\ude00"}',
        "output": '["\\u00e9"]',
        "metadata": '{"who":"zo\\u00eb"}',
    }
    assert codec.job_from_fields(old) == codec.job_from_fields(fields) == job
    # and the fingerprints stored with their jobs (idempotency, the result cache) do not move
    assert codec.digest("é") == hashlib.sha256(b'"\\u00e9"').hexdigest()


def test_a_bad_priority_is_refused_before_any_command() -> None:
    op = submit_job("resnet:v1", 1, priority="urgent")
    with pytest.raises(ValueError, match="priority must be one of 'normal', 'high', got 'urgent'"):
        next(op)
    step = next(submit_job("resnet:v1", 1, priority="high"))
    assert isinstance(step, list)
    [script] = step
    assert isinstance(script, Eval) and script.keys[1] == "jq:q:resnet:v1:stream:high"


@pytest.mark.parametrize("bad", ["", "a b", "q{1}", "q*", ":lead", "x" * 201])
def test_queue_names_that_would_need_quoting_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid queue"):
        Keyspace().queue(bad)


def test_queue_name_round_trip() -> None:
    assert queue_name("llama-3", "2024.1") == "llama-3:2024.1"
    assert split_queue("org/model:v:2") == ("org/model:v", "2")
    assert split_queue("plain") == ("plain", "")


@given(
    input=json_values,
    output=json_values,
    attempts=st.integers(0, 10),
    started=st.none() | st.floats(0, 2e9),
    meta=st.dictionaries(st.text(), json_values, max_size=3),
)
def test_job_record_round_trip(
    input: Any, output: Any, attempts: int, started: float | None, meta: Any
) -> None:
    job = Job(
        id="j1",
        queue="m:v",
        model="m",
        version="v",
        status=JobStatus.RUNNING,
        priority=Priority.HIGH,
        input=input,
        submitted_at=1.5,
        attempts=attempts,
        started_at=started,
        worker="w",
        output=output,
        error="e",
        metadata=meta,
    )
    assert codec.job_from_fields(codec.job_fields(job)) == job


def test_worker_record_round_trip() -> None:
    info = WorkerInfo("p", "m:v", WorkerState.IDLE, 1.0, 2.0, ready_at=1.5, warmup_seconds=0.5, pid=7)
    assert codec.worker_from_fields(codec.worker_fields(info)) == info
    bare = WorkerInfo("p", "m:v", WorkerState.STARTING, 1.0, 2.0)
    assert codec.worker_from_fields(codec.worker_fields(bare)) == bare


def test_nan_input_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON"):
        codec.dumps(float("nan"))


def test_reply_shapes_of_both_protocols() -> None:
    assert codec.as_map(["a", "1", "b", "2"]) == {"a": "1", "b": "2"} == codec.as_map({"a": "1", "b": "2"})
    resp2 = [["s:high", [["1-0", ["job", "j1"]]]], ["s", [["2-0", ["job", "j2"]]]]]
    resp3 = {"s:high": [["1-0", ["job", "j1"]]], "s": [["2-0", ["job", "j2"]]]}
    assert codec.read_entries("q", resp2) == codec.read_entries("q", resp3)
    assert [e.job_id for e in codec.read_entries("q", resp2)] == ["j1", "j2"]
    assert codec.stream_entries([["3-0", None]]) == [("3-0", {})]  # deleted while pending
    assert codec.read_entries("q", None) == []
    rows = [["name", "other", "pending", 1], {"name": "workers", "pending": 2, "lag": None}]
    assert codec.group_info(rows, "workers") == {"name": "workers", "pending": 2, "lag": None}
    assert codec.group_info(redis.ResponseError("no such key"), "workers") is None


def test_decode_normalises_bytes_everywhere() -> None:
    assert decode([b"a", (b"b", {b"k": {b"v"}}), 1, None]) == ["a", ["b", {"k": ["v"]}], 1, None]


@pytest.mark.parametrize(
    ("info", "length", "expected"),
    [
        (None, 4, (4, 0, True)),  # no group yet
        ({"pending": 2, "lag": 3}, 5, (3, 2, True)),
        ({"pending": 2, "lag": None}, 5, (3, 2, False)),  # lag unknown after deletions
        ({"pending": 9, "lag": None}, 5, (0, 9, False)),
    ],
)
def test_waiting_falls_back_when_lag_is_unknown(
    info: dict[str, Any] | None, length: int, expected: tuple[int, int, bool]
) -> None:
    assert _stream_counts(info, length) == expected


def test_driver_reloads_a_script_the_server_forgot() -> None:
    def op() -> Any:
        replies = yield [Call(("GET", "k")), Eval(SUBMIT, ("a",), ("b",))]
        return replies

    trips = _round_trips(op())
    first = next(trips)
    assert first == [("GET", "k"), ("EVALSHA", SUBMIT.sha, 1, "a", "b")]
    load = trips.send([b"v", redis.exceptions.NoScriptError("NOSCRIPT No matching script")])
    assert load == [("SCRIPT", "LOAD", SUBMIT.source)]
    again = trips.send([SUBMIT.sha.encode()])
    assert again == [("EVALSHA", SUBMIT.sha, 1, "a", "b")]
    with pytest.raises(StopIteration) as done:
        trips.send([[1, b"id"]])
    assert done.value.value == ["v", [1, "id"]]


def test_driver_raises_unexpected_error_replies() -> None:
    trips = _round_trips(get_job("j"))
    next(trips)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        trips.send([redis.ResponseError("WRONGTYPE")])


def test_wait_polls_with_backoff_until_terminal() -> None:
    queued = ["id", "j", "queue", "m:v", "status", "queued", "input", "1", "submitted_at", "1.0"]
    done = [x if x != "queued" else "succeeded" for x in queued]
    trips = _round_trips(wait_for_job("j", timeout=60, poll_min=0.01, poll_max=0.02))
    assert next(trips) == [("HGETALL", "jq:job:j")]
    sleeps = []
    step = trips.send([queued])
    for _ in range(3):
        assert isinstance(step, Sleep)
        sleeps.append(step.seconds)
        step = trips.send(None)
        step = trips.send([queued])
    assert sleeps == [0.01, 0.02, 0.02]
    assert isinstance(step, Sleep)
    trips.send(None)
    with pytest.raises(StopIteration) as result:
        trips.send([done])
    assert result.value.value.status is JobStatus.SUCCEEDED


# Error replies as the server sends them; parsed by redis-py's own parser, so each arrives as the
# exception class (or plain ResponseError) a real client would raise.
TRANSIENT_REPLIES = {
    "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.": "(BUSY",
    "LOADING Valkey is loading the dataset in memory": "(LOADING",
    "MISCONF Valkey is configured to save RDB snapshots, but it's currently unable to persist": "(MISCONF",
    "OOM command not allowed when used memory > 'maxmemory'.": "(OOM)",
    "READONLY You can't write against a read only replica.": "(READONLY",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": "(MASTERDOWN)",
    "TRYAGAIN Multiple keys request during rehashing of slot": "(TRYAGAIN)",
    "CLUSTERDOWN The cluster is down": "(CLUSTERDOWN)",
    "NOREPLICAS Not enough good replicas to write.": "(NOREPLICAS",
}


def server_error(reply: str) -> Exception:
    """The exception redis-py raises for the error ``reply``."""
    exc: Exception = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    return exc


@pytest.mark.parametrize("reply", sorted(TRANSIENT_REPLIES))
def test_server_states_that_pass_are_transient_and_named(reply: str) -> None:
    exc = server_error(reply)
    assert transient(exc)
    assert TRANSIENT_REPLIES[reply] in describe(exc)


def test_errors_a_retry_would_repeat_are_not_transient() -> None:
    for reply in (
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "BUSYKEY Target key name already exists.",  # a prefix of no refusal: the whole code counts
        "NOPERM this user has no permissions to run the 'evalsha' command",
        "ERR Error running script (call to f_0123): @user_script:3: user_script:3: oops",
        "NOSCRIPT No matching script.",
    ):
        assert not transient(server_error(reply)), reply
    assert not transient(ValueError("BUSY"))
    for outage in (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379."), redis.TimeoutError()):
        assert transient(outage)
    assert describe(redis.ConnectionError("Connection refused")) == (
        "is unreachable (ConnectionError: Connection refused)"
    )
