"""A worker Deployment deleted and re-created under the same name (real API server, real controllers,
the autoscaler's ServiceAccount).

Scale patches go by name, so they reach the new Deployment whatever the target thinks; but the pods
it reports (ready / starting, the startup samples the policy plans warm-ups with) and the Events it
records must be the new Deployment's too. The new one here has another selector and other pods, so a
target still watching the old selector sees the old pods drain away and never the new ones.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from autoscaler.engine.snapshot import Decision, PodPhase
from autoscaler.targets.base import TargetState, TargetUnavailableError
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import READY_DELAY, Install, ready_pods, wait_for

pytestmark = pytest.mark.e2e

NEW_DELAY = 1.5  # kwok's warm-up for the new Deployment's pods: their startup samples show it


@pytest.fixture
def target(installed: Install) -> Iterator[KubernetesTarget]:
    """A fresh target per test (each test re-creates the Deployment under it, with pods that the
    ``installed`` helpers, which select ``app.kubernetes.io/name=worker``, no longer see)."""
    t = KubernetesTarget(installed.sa, installed.namespace, "worker")
    yield t
    t.close()


def recreate_worker(installed: Install, app: str, replicas: int) -> str:
    """Delete the worker Deployment, wait until it is gone, create it again selecting ``app=<app>``
    pods only (none of the old ones), with ``replicas`` pods. Returns the new uid."""
    body = worker_body(installed)
    installed.apps.delete_namespaced_deployment("worker", installed.namespace)
    wait_for("the old Deployment to be gone", lambda: not deployment_exists(installed), 30)
    return create_worker(installed, body, app, replicas)


def worker_body(installed: Install) -> dict[str, Any]:
    """The worker Deployment as read from the server, as a JSON-ready dict."""
    obj = installed.apps.read_namespaced_deployment("worker", installed.namespace)
    body = installed.admin.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return dict(copy.deepcopy(body))


def deployment_exists(installed: Install) -> bool:
    names = installed.apps.list_namespaced_deployment(installed.namespace).items
    return any(d.metadata.name == "worker" for d in names)


def create_worker(installed: Install, body: dict[str, Any], app: str, replicas: int) -> str:
    """``body`` (a Deployment read from the server) created afresh with another selector."""
    body["metadata"] = {"name": "worker", "namespace": installed.namespace, "labels": {"app": app}}
    body.pop("status", None)
    template = body["spec"]["template"]
    template["metadata"]["labels"] = {"app": app}
    template["metadata"].setdefault("annotations", {})[READY_DELAY] = f"{NEW_DELAY:g}"
    body["spec"]["selector"] = {"matchLabels": {"app": app}}
    body["spec"]["replicas"] = replicas
    created = installed.apps.create_namespaced_deployment(installed.namespace, body)
    return str(created.metadata.uid)


def live_pods(installed: Install, app: str) -> set[str]:
    pods = installed.core.list_namespaced_pod(installed.namespace, label_selector=f"app={app}").items
    return {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None}


def exactly(
    target: KubernetesTarget, installed: Install, app: str, samples: list[float]
) -> TargetState | None:
    """The target's state once it shows exactly the ``app`` pods, all Ready (else None)."""
    state = target.observe()
    samples.extend(state.startup_times)
    names = {p.name for p in state.pods}
    ready = all(p.phase is PodPhase.READY for p in state.pods)
    expected = live_pods(installed, app)
    return state if ready and names == expected and len(names) == state.replicas else None


def test_a_deployment_re_created_between_ticks_is_watched_afresh(
    installed: Install, target: KubernetesTarget
) -> None:
    """No tick falls between the deletion and the re-creation (no 404 seen): the new uid on the
    scale subresource alone must make the target drop the old pods and watch the new selector."""
    old_state = wait_for("2 Ready worker pods", lambda: ready_pods(target, 2) or scale_to(target, 2), 30)
    old_names = {p.name for p in old_state.pods}
    assert target.selector == "app.kubernetes.io/name=worker"
    # An Event on the old Deployment, whose message the new one's first rescale repeats.
    assert target.scale(Decision(3, "recreate"), old_state) == 3
    wait_for("3 Ready worker pods", lambda: ready_pods(target, 3), 30)

    uid = recreate_worker(installed, "worker-v2", 2)
    samples: list[float] = []
    state = wait_for(
        "the target to show the new Deployment's pods, and only them",
        lambda: exactly(target, installed, "worker-v2", samples),
        30,
        interval=0.25,
    )
    assert target.selector == "app=worker-v2"
    assert not {p.name for p in state.pods} & old_names
    # One startup sample per new pod, each the new warm-up; none from the old pods.
    assert len(samples) == 2 and all(abs(s - NEW_DELAY) <= 1.0 for s in samples), samples

    # The same decision again: its Event must be a new one on the new uid, not a repeat counted on
    # the old Deployment's Event.
    assert target.scale(Decision(3, "recreate"), state) == 3

    def event_on_new_uid() -> list[Any] | None:
        events = installed.core.list_namespaced_event(
            installed.namespace, field_selector="involvedObject.name=worker,reason=SuccessfulRescale"
        ).items
        found = [e for e in events if e.message.startswith("New size: 3; reason: recreate")]
        return [e for e in found if e.involved_object.uid == uid] or None

    [event] = wait_for("a SuccessfulRescale Event on the new Deployment", event_on_new_uid, 10)
    assert event.count == 1
    wait_for("3 Ready new pods", lambda: exactly(target, installed, "worker-v2", []), 30, interval=0.25)


def test_a_tick_that_finds_the_deployment_gone_and_then_a_new_one(
    installed: Install, target: KubernetesTarget
) -> None:
    """A tick in the gap reports the target unavailable (the loop holds); the first tick after the
    re-creation shows the new pods only."""
    target.observe()
    old = target.pod_watch
    assert old is not None
    body = worker_body(installed)
    installed.apps.delete_namespaced_deployment("worker", installed.namespace)
    wait_for("the Deployment to be gone", lambda: not deployment_exists(installed), 30)
    with pytest.raises(TargetUnavailableError, match="404"):
        target.observe()
    with pytest.raises(TargetUnavailableError, match="404"):
        target.observe()  # still gone: the workload itself is read (for its selector), and is not there

    create_worker(installed, body, "worker-v3", 1)
    state = wait_for(
        "the target to show the new Deployment's pod",
        lambda: exactly(target, installed, "worker-v3", []),
        30,
        interval=0.25,
    )
    assert len(state.pods) == 1 and target.pod_watch is not old
    assert target.selector == "app=worker-v3"
    wait_for("the old watch to stop", lambda: not old.alive, 5, interval=0.05)


def scale_to(target: KubernetesTarget, replicas: int) -> TargetState | None:
    """Order ``replicas`` pods if the count differs; None, so that ``wait_for`` polls on."""
    state = target.observe()
    if state.replicas != replicas:
        target.scale(Decision(replicas, "scene"), state)
    return None
