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

from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import PodPhase
from autoscaler.engine.target import WorkloadSpec
from autoscaler.loop import LoopSettings, TargetLoop
from autoscaler.targets.kube_client import format_time
from autoscaler.targets.kubernetes import KubernetesTarget, _ScaleRead
from autoscaler.targets.pod_watch import PodWatch, WatchedPod
from tests.unit.doubles import Clock, MemorySource, MemoryStateStore

CREATED = 1_700_000_000.0
READY = CREATED + 42.0
WORKLOAD = WorkloadSpec()


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
        ((uid, seconds),) = target._startups  # not also ~1.7e9 s for w-1
        assert uid == "u2" and seconds == pytest.approx(42.0)
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


def _restarted_process(
    monkeypatch: pytest.MonkeyPatch, store: MemoryStateStore, pods: list[dict[str, Any]]
) -> Any:
    """One daemon process: a Kubernetes target whose pod watch has made its first list of ``pods``
    (the API server stood in for by canned replies, every other call stubbed: nothing here may
    reach the network), in a loop with the startup-aware policy."""
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()), "ns", "worker")
    watch = PodWatch(_Core(lists=[pods], streams=[]), "ns", "app=w", on_ready=target._pod_ready)  # type: ignore[arg-type]
    watch._list()  # the first list of a new process: every pod Ready already is reported, initial
    monkeypatch.setattr(target, "_synced_watch", lambda: watch)
    monkeypatch.setattr(target, "_read_scale", lambda: _ScaleRead(len(pods), "1", None))
    monkeypatch.setattr(target, "scale", lambda *args: None)  # what it decides is not the subject
    # Nor is the check for other autoscalers: unstubbed, it sent its HPA list to a host that is not
    # there, retried it, and held each tick about 2 s (with urllib3's scheme-less-URL warning).
    monkeypatch.setattr(target._conflicts, "maybe_check", lambda may_act: None)
    clock = Clock(READY + 100.0)
    return TargetLoop(
        "t",
        MemorySource(clock),
        target,
        make_policy("startup-aware", WORKLOAD),
        LoopSettings(WORKLOAD),
        clock=clock,
        state_store=store,
    )


def test_a_restored_state_does_not_count_the_startups_of_pods_it_already_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new process (restart, failover, rebuild on reload) restores the samples its predecessor
    saved, then lists the pods: those Ready already are the ones whose startups were sampled. Counted
    again, each restart added them once more to the startup p90's window."""
    store = MemoryStateStore()
    ready = [pod(f"w-{i}", f"u{i}", created=CREATED, ready=READY + i) for i in range(3)]
    first = _restarted_process(monkeypatch, store, ready)
    first.tick()
    first.save_state(force=True)
    assert first.policy._startup.count == 3

    newer = [*ready, pod("w-3", "u3", created=CREATED, ready=READY + 10)]  # one pod Ready since
    second = _restarted_process(monkeypatch, store, newer)
    second.tick()
    assert second.policy._startup.count == 4  # the three restored, and the new pod's once
    second.save_state(force=True)

    third = _restarted_process(monkeypatch, store, newer)  # and again: still each pod once
    third.tick()
    assert third.policy._startup.count == 4


def test_a_pod_recreated_under_its_name_while_the_watch_relists_gives_its_startup_sample() -> None:
    """A StatefulSet re-creates its pods under their names. Compared by name alone, the new pod
    found Ready by a re-list (410 Gone) was Ready "before" (its predecessor was), and its warm-up
    was never reported."""
    ready: list[tuple[str, str]] = []
    core = _Core(
        lists=[
            [pod("w-0", "u1", created=CREATED, ready=READY)],
            [pod("w-0", "u2", created=CREATED + 100, ready=CREATED + 130)],  # replaced meanwhile
        ],
        streams=[
            [{"type": "MODIFIED", "object": pod("w-0", "u3", created=CREATED + 200, ready=CREATED + 240)}]
        ],
    )
    watch = PodWatch(core, "ns", "app=w", on_ready=lambda p, initial: ready.append((p.name, p.uid)))  # type: ignore[arg-type]
    watch._list()
    rv = watch._list()
    watch._watch(rv)  # and again, seen by the stream as a change of the pod under that name
    assert ready == [("w-0", "u1"), ("w-0", "u2"), ("w-0", "u3")]
