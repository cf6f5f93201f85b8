"""The target's gated writes (scale patch, pod annotations) are one short attempt each: a request
bounded by WRITE_TIMEOUT_SECONDS in all, on a connection pool that makes no retries of its own.

Why: the gate (is this replica still the leader?) is asked before each attempt, and the leader keeps
its gate open only while a write started then still ends before its lease can expire. urllib3's own
retries (each with a fresh timeout) or the 15 s read timeout of the other calls would let an attempt
outlast that. No API server is contacted: the pool's ``request`` is replaced."""

from __future__ import annotations

from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s

from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS, TargetUnavailableError
from autoscaler.targets.kubernetes import Backoff, KubernetesTarget


class RefusedError(Exception):
    """Not retryable: the call ends at the first attempt."""


def test_gated_writes_are_one_attempt_bounded_by_the_write_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    api = k8s.ApiClient(k8s.Configuration())
    target = KubernetesTarget(api, "ns", "worker", backoff=Backoff(attempts=1))
    # The pool the writes go through (before the fix: the caller's own, shared with the reads).
    writes = getattr(target, "_write_apps", target._apps).api_client.rest_client.pool_manager
    calls: list[tuple[str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> Any:
        calls.append((method, kwargs.get("timeout")))
        raise RefusedError(url)

    monkeypatch.setattr(writes, "request", request)
    with pytest.raises(RefusedError):
        target._patch_scale(3, "1")
    with pytest.raises(TargetUnavailableError, match="RefusedError"):
        target._annotate("worker-1", {"a": "b"}, lambda: True)
    assert [method for method, _ in calls] == ["PATCH", "PATCH"]
    for _, timeout in calls:
        assert isinstance(timeout, urllib3.Timeout) and timeout.total == WRITE_TIMEOUT_SECONDS, timeout
    retries = writes.connection_pool_kw.get("retries")
    assert isinstance(retries, urllib3.Retry) and retries.total == 0, retries
    assert api.configuration.retries is None  # the caller's client (reads, the watch) is left alone
    target.close()
