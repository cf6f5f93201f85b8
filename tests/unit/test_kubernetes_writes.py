"""The target's gated writes (scale patch, pod annotations) are one short attempt each: a request
bounded by WRITE_TIMEOUT_SECONDS in all, on a connection pool that makes no retries of its own.

Why: the gate (is this replica still the leader?) is asked before each attempt, and the leader keeps
its gate open only while a write started then still ends before its lease can expire. urllib3's own
retries (each with a fresh timeout) or the 15 s read timeout of the other calls would let an attempt
outlast that. No API server is contacted: the pool's ``request`` is replaced.

A replica whose gate is closed (the standby) writes nothing at all, Events included."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.engine.snapshot import Decision
from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS, TargetState, TargetUnavailableError
from autoscaler.targets.deletion_marks import Marks
from autoscaler.targets.kube_client import Backoff
from autoscaler.targets.kubernetes import KubernetesTarget, _ScaleRead
from autoscaler.targets.pod_watch import WatchedPod


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
        target._marks._annotate(
            WatchedPod("worker-1", "uid-1", None, None, None, 0, None), {"a": "b"}, lambda: True
        )
    assert [method for method, _ in calls] == ["PATCH", "PATCH"]
    for _, timeout in calls:
        assert isinstance(timeout, urllib3.Timeout) and timeout.total == WRITE_TIMEOUT_SECONDS, timeout
    retries = writes.connection_pool_kw.get("retries")
    assert isinstance(retries, urllib3.Retry) and retries.total == 0, retries
    assert api.configuration.retries is None  # the caller's client (reads, the watch) is left alone
    target.close()


def test_a_scale_patch_outlasts_a_burst_of_status_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after a change of the count the controllers update the Deployment's status several times
    a second, each a new resourceVersion: the patch conflicts though nobody changed the count. Four
    such conflicts in a row (seen under load) must not fail the rescale."""
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker", backoff=Backoff(attempts=1))
    reads = iter(range(100))
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(3, str(next(reads)), None))
    monkeypatch.setattr(target._conflicts, "_checked", float("inf"))
    monkeypatch.setattr(target._events, "record", lambda *args: None)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    sent: list[str] = []

    def patch(replicas: int, rv: str) -> None:
        sent.append(rv)
        if len(sent) <= 4:
            raise ApiException(status=409, reason="Conflict")

    monkeypatch.setattr(target, "_patch_scale", patch)
    state = TargetState(observed_at=0.0, replicas=3, pods=())
    try:
        assert target.scale(Decision(5, "up"), state) == 5
    finally:
        target.close()
    assert sent == ["0", "1", "2", "3", "4"]  # each attempt on the version read after the conflict


def test_a_count_changed_behind_our_back_is_written_again_when_the_policy_asks_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count compared with is the one read from the API server (``spec.replicas`` now), never
    the count this target wrote last: asked for 3 again after someone set 5 over our 3, it writes 3."""
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker", backoff=Backoff(attempts=1))
    spec = {"replicas": 5}
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(spec["replicas"], "1", None))
    monkeypatch.setattr(target._conflicts, "_checked", float("inf"))
    monkeypatch.setattr(target._events, "record", lambda *args: None)
    monkeypatch.setattr(target._marks, "mark_deletion_costs", lambda *args: Marks(0))
    sent: list[int] = []

    def patch(replicas: int, rv: str) -> None:
        sent.append(replicas)
        spec["replicas"] = replicas

    monkeypatch.setattr(target, "_patch_scale", patch)
    try:
        assert target.scale(Decision(3, "down"), TargetState(0.0, 5, ())) == 3
        spec["replicas"] = 5  # kubectl scale, a deploy pipeline re-applying a manifest with replicas
        assert target.scale(Decision(3, "down"), TargetState(1.0, 5, ())) == 3
        assert target.scale(Decision(3, "down"), TargetState(2.0, 3, ())) is None  # nothing to correct
    finally:
        target.close()
    assert sent == [3, 3] and spec["replicas"] == 3


class _NoPods:
    def pods(self) -> list[Any]:
        return []


def test_only_a_replica_that_may_act_reports_a_conflicting_autoscaler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every replica's observe() checks for another autoscaler on the workload; the standby created
    the ``ConflictingAutoscaler`` Event too, so with 2 replicas each conflict was reported twice.
    The standby still sees the conflict (a read) but writes nothing; once it may act, it reports it
    once, without waiting for the next check."""
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker", backoff=Backoff(attempts=1))
    leads = {"now": False}
    target.bind_gate(lambda: leads["now"])  # the loop's may_act: this replica is the standby
    hpas = {
        "items": [
            {
                "metadata": {"name": "keda-hpa-worker"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "worker"}},
            }
        ]
    }
    lists: list[str] = []

    def list_hpas(*args: Any, **kwargs: Any) -> Any:
        lists.append("hpas")
        return SimpleNamespace(data=json.dumps(hpas).encode())

    def no_keda(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=404, reason="Not Found")

    written: list[str] = []
    conflicts = target._conflicts
    monkeypatch.setattr(conflicts._autoscaling, "list_namespaced_horizontal_pod_autoscaler", list_hpas)
    monkeypatch.setattr(conflicts._custom, "list_namespaced_custom_object", no_keda)
    monkeypatch.setattr(
        target._events._core, "create_namespaced_event", lambda ns, event, **kw: written.append(event.reason)
    )
    monkeypatch.setattr(
        target._events._core, "patch_namespaced_event", lambda *args, **kw: written.append("patch")
    )
    monkeypatch.setattr(target, "_synced_watch", _NoPods)
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(3, "1", None))
    try:
        assert target.observe().replicas == 3
        assert target.conflict is not None and target.conflict.name == "keda-hpa-worker"
        assert written == [], f"the standby wrote to the API server: {written}"

        leads["now"] = True  # it takes over: the conflict it knows is reported, once
        target.observe()
        target.observe()
        assert written == ["ConflictingAutoscaler"] and lists == ["hpas"]
    finally:
        target.close()
