"""Version routing, admission control, authentication and error mapping: the API's pure decisions."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from api.admission import BacklogMonitor, ConcurrencyGate
from api.auth import Authenticator
from api.errors import ApiError, describe_validation, redis_failure_response, retry_advice
from api.metrics import ApiMetrics
from api.routing import TrafficRouter, _Split
from jobqueue import Settings


def router(**configured: dict[str, float]) -> TrafficRouter:
    return TrafficRouter(configured, "default", "v1", Settings(), rng=random.Random(7))


def test_unversioned_requests_follow_the_weights() -> None:
    r = router(resnet={"v1": 90, "v2": 10})
    counts = Counter(r.resolve("resnet", None) for _ in range(10_000))
    assert set(counts) == {"resnet:v1", "resnet:v2"}
    assert 800 <= counts["resnet:v2"] <= 1200
    assert r.resolve("resnet", "v2") == "resnet:v2"  # a named (known) version always wins
    assert r.resolve("default", None) == "default:v1"  # MODEL_REF's version when no weights


def test_an_idempotency_key_always_routes_to_the_same_version() -> None:
    r = router(resnet={"v1": 50, "v2": 50})
    for key in ("order-1", "order-2", "order-3", "order-4"):
        assert len({r.resolve("resnet", None, sticky=key) for _ in range(20)}) == 1
    counts = Counter(r.resolve("resnet", None, sticky=f"k{i}") for i in range(2000))
    assert 850 <= counts["resnet:v2"] <= 1150  # and keys still split by the weights


def test_live_weights_override_and_clearing_restores() -> None:
    r = router(resnet={"v1": 90, "v2": 10})
    r.set_live({"resnet": {"v1": 0, "v2": 1}, "bert": {"v1": 1}})
    assert {r.resolve("resnet", None) for _ in range(100)} == {"resnet:v2"}
    assert r.known("bert") and r.models() == ["bert", "default", "resnet"]
    r.set_live({})
    assert not r.known("bert") and r.effective() == {"resnet": {"v1": 90, "v2": 10}}


def test_unknown_model_and_bad_version_are_422() -> None:
    r = router()
    with pytest.raises(ApiError) as exc:
        r.resolve("nope", None)
    assert (exc.value.status, exc.value.error) == (422, "unknown_model")
    assert "known models: default" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        r.resolve("default", "v 1")
    assert exc.value.status == 422


def test_only_known_versions_may_be_named() -> None:
    r = router(resnet={"v1": 100, "v2": 0})
    assert r.resolve("resnet", "v2") == "resnet:v2"  # weight 0: addressable by name, never drawn
    assert {r.resolve("resnet", None) for _ in range(50)} == {"resnet:v1"}
    assert r.resolve("default", "v1") == "default:v1"  # MODEL_REF's version
    for model, version, known in [("resnet", "v9", ["v1", "v2"]), ("default", "v2", ["v1"])]:
        with pytest.raises(ApiError) as exc:
            r.resolve(model, version)
        assert (exc.value.status, exc.value.error, exc.value.reason) == (422, "unknown_version", "invalid")
        assert f"known versions: {', '.join(known)}" in exc.value.detail
        assert exc.value.extra["known_versions"] == known
    r.set_live({"resnet": {"v3": 1}, "bert": {"b1": 1}})  # live splits add versions
    assert r.versions("resnet") == ["v1", "v2", "v3"]  # configured ones stay addressable
    assert r.resolve("bert", "b1") == "bert:b1" and r.resolve("resnet", "v3") == "resnet:v3"
    r.set_live({})
    with pytest.raises(ApiError, match="known versions: v1, v2"):
        r.resolve("resnet", "v3")


@given(
    st.lists(st.sampled_from([0.0, 1e-9, 1.0, 3.5, 1e6]), min_size=1, max_size=4),
    st.floats(1e-9, 1e6),
    st.permutations(["a", "b", "c", "d", "e"]),
    st.floats(0, 0.9999),
)
def test_a_draw_never_lands_on_a_zero_weight(
    zeros_and_more: list[float], one: float, names: list[str], u: float
) -> None:
    # Zero weights mixed with at least one positive one, in any order: the only case that can fail.
    weights = dict(zip(names, [*zeros_and_more, one], strict=False))
    assert weights[_Split.of(weights).draw(u)] > 0


def test_backlog_monitor_counts_local_acceptances_between_reads() -> None:
    m = BacklogMonitor(5, Settings(), ApiMetrics())
    m.waiting["q:v1"] = 3
    m.check("q:v1")
    m.accepted("q:v1")
    m.accepted("q:v1")
    with pytest.raises(ApiError) as exc:
        m.check("q:v1")  # 3 read + 2 accepted since
    assert (exc.value.status, exc.value.reason, exc.value.retry_after) == (429, "overloaded", 5.0)
    m.check("other:v1")  # per queue
    BacklogMonitor(0, Settings(), ApiMetrics()).check("q:v1")  # 0 disables


def test_concurrency_gate() -> None:
    metrics = ApiMetrics()
    gate = ConcurrencyGate(2, metrics)
    with gate.slot(), gate.slot():
        with pytest.raises(ApiError) as exc, gate.slot():
            pass
        assert exc.value.status == 429 and gate.in_flight == 2
    assert gate.in_flight == 0
    with pytest.raises(RuntimeError), gate.slot():  # a failing request frees its slot
        raise RuntimeError
    assert gate.in_flight == 0


def test_authenticator() -> None:
    auth = Authenticator({"key-all-1234": frozenset({"*"}), "key-resnet-1": frozenset({"resnet"})})
    auth.authorize("key-all-1234", "anything")
    auth.authorize("key-resnet-1", "resnet")
    for key, model, status in [
        (None, "resnet", 401),
        ("", "resnet", 401),
        ("nope", "resnet", 401),
        ("key-resnet-1", "bert", 403),
    ]:
        with pytest.raises(ApiError) as exc:
            auth.authorize(key, model)
        assert exc.value.status == status
        if status == 401:
            assert exc.value.headers is not None and "WWW-Authenticate" in exc.value.headers
    Authenticator({}).authorize(None, "x")  # auth off


def test_validation_errors_become_one_sentence() -> None:
    missing = {"type": "missing", "loc": ("body", "input"), "msg": "Field required", "input": {"secret": 1}}
    broken = {"type": "json_invalid", "loc": ("body", 7), "msg": "bad", "ctx": {"error": "Expecting value"}}
    sentence, items = describe_validation([missing, broken])
    assert sentence == "body.input: Field required; body: not valid JSON (Expecting value)"
    assert all("input" not in i for i in items)  # request values are never echoed


def test_redis_misconf_is_a_503_saying_writes_are_refused() -> None:
    misconf = redis.exceptions.ResponseError(
        "MISCONF Valkey is configured to save RDB snapshots, but it's currently unable to persist to disk."
    )
    response = redis_failure_response(misconf, "POST", "/v1/jobs")
    assert response is not None and response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    body = json.loads(bytes(response.body))
    assert body["error"] == "redis_unavailable"
    assert "refuses writes because its persistence failed" in body["detail"]
    assert "same idempotency_key" in body["detail"]
    down = redis_failure_response(redis.exceptions.ConnectionError("refused"), "GET", "/v1/jobs/{job_id}")
    assert down is not None and down.status_code == 503
    # Other command errors are bugs (500 elsewhere), not outages.
    assert redis_failure_response(redis.exceptions.ResponseError("WRONGTYPE Operation"), "GET", "/x") is None
    assert redis_failure_response(ValueError("MISCONF"), "GET", "/x") is None


def test_retry_advice_names_the_idempotency_key_only_where_there_is_one() -> None:
    assert "same idempotency_key" in retry_advice("POST", "/v1/jobs")
    for path in ("/push", "/infer"):
        advice = retry_advice("POST", path)
        assert "takes no idempotency key" in advice and "queues it again" in advice
    for method, path in [
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("GET", "/data/{job_id}"),
    ]:
        assert retry_advice(method, path) == "retry later"


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (redis.exceptions.ResponseError("BUSY Valkey is busy running a script. You can only..."), "BUSY"),
        (redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."), "NOREPLICAS"),
        (redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"), "TRYAGAIN"),
        (redis.exceptions.BusyLoadingError("Valkey is loading the dataset in memory"), "LOADING"),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM"),
    ],
)
def test_redis_states_that_pass_are_a_503_naming_the_state(error: Exception, named: str) -> None:
    """BUSY (a script past its time limit), NOREPLICAS and TRYAGAIN were answered 500: a bug, no
    Retry-After. Every state that passes is a 503 whose detail says which one it is."""
    response = redis_failure_response(error, "GET", "/v1/jobs/{job_id}")
    assert response is not None and response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    body = json.loads(bytes(response.body))
    assert body["error"] == "redis_unavailable" and f"({named}" in body["detail"]
