"""What the Kubernetes target makes of the pod objects its watch receives, without an API server:
the pod JSON is parsed by the target's own code (``WatchedPod``, ``PodWatch``) from canned list and
watch replies, the way they come off the wire.

The subject is a pod whose ``metadata.creationTimestamp`` is missing: it must give no startup sample
(it used to give one of about 1.7e9 s, creation read as the epoch) and count as created when first
seen, not decades ago (which projected it Ready "now").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client as k8s

from autoscaler.engine.snapshot import PodPhase
from autoscaler.targets.kube_client import format_time
from autoscaler.targets.kubernetes import KubernetesTarget
from autoscaler.targets.pod_watch import PodWatch, WatchedPod

CREATED = 1_700_000_000.0
READY = CREATED + 42.0


def pod(name: str, uid: str, *, created: float | None, ready: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": "7"}
    if created is not None:
        meta["creationTimestamp"] = format_time(created)
    status: dict[str, Any] = {"phase": "Running"}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": format_time(ready)}]
    return {"metadata": meta, "status": status}


class _Stream:
    """A watch response: newline-delimited JSON events, as ``iter_resp_lines`` reads them."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._body = "".join(json.dumps(e) + "\n" for e in events).encode()

    def stream(self, amt: object = None, decode_content: object = None) -> Iterator[bytes]:
        yield self._body

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _Core:
    """Answers ``list_namespaced_pod``: the next canned list, or with ``watch=True`` the next stream."""

    def __init__(self, lists: list[list[dict[str, Any]]], streams: list[list[dict[str, Any]]]) -> None:
        self.lists, self.streams = lists, streams

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            return _Stream(self.streams.pop(0))
        items = self.lists.pop(0)
        return SimpleNamespace(data=json.dumps({"items": items, "metadata": {"resourceVersion": "7"}}))


def test_a_pod_without_creation_timestamp_has_no_startup_and_counts_as_created_when_first_seen() -> None:
    parsed = WatchedPod.from_dict(pod("w-1", "u1", created=None, ready=READY), now=READY + 5)
    assert parsed.created_at is None
    assert parsed.startup_seconds is None
    assert parsed.view().created_at == READY + 5  # first sight, not the epoch

    known = WatchedPod.from_dict(pod("w-2", "u2", created=CREATED, ready=READY), now=READY + 5)
    assert known.startup_seconds == pytest.approx(42.0)
    assert known.view().created_at == pytest.approx(CREATED)


def test_the_target_records_no_startup_sample_for_a_pod_without_creation_timestamp() -> None:
    api = k8s.ApiClient(k8s.Configuration())  # never contacted: nothing here calls the API
    target = KubernetesTarget(api, "ns", "worker")
    try:
        target._pod_ready(WatchedPod.from_dict(pod("w-1", "u1", created=None, ready=READY)), False)
        target._pod_ready(WatchedPod.from_dict(pod("w-2", "u2", created=CREATED, ready=READY)), False)
        assert target._startups == [pytest.approx(42.0)]  # not also ~1.7e9 s for w-1
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_first_sight_of_a_pod_without_creation_timestamp_survives_watch_events_and_relists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SimpleNamespace(now=CREATED)
    monkeypatch.setattr("autoscaler.targets.pod_watch.time.time", lambda: clock.now)
    ready: list[tuple[str, bool]] = []
    core = _Core(
        lists=[[pod("w-1", "u1", created=None)], [pod("w-1", "u1", created=None, ready=READY)]],
        streams=[[{"type": "MODIFIED", "object": pod("w-1", "u1", created=None)}]],
    )
    watch = PodWatch(core, "ns", "app=w", on_ready=lambda p, initial: ready.append((p.name, initial)))  # type: ignore[arg-type]
    rv = watch._list()
    clock.now = CREATED + 30
    watch._watch(rv)  # an update of the same pod
    clock.now = CREATED + 60
    watch._list()  # a re-list (410 Gone), the pod Ready by now
    (seen,) = watch.pods()
    assert seen.phase is PodPhase.READY and seen.created_at is None
    assert seen.view().created_at == CREATED  # still the first sight
    assert ready == [("w-1", False)]

    core.lists.append([pod("w-1", "u2", created=None)])  # same name, new pod (a StatefulSet's)
    watch._list()
    (replaced,) = watch.pods()
    assert replaced.view().created_at == CREATED + 60
