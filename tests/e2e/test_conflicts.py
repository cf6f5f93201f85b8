"""Shadow mode never writes; another autoscaler on the same workload (an HPA, or a KEDA ScaledObject
when the CRD exists) is detected and the target refuses to act, unless it is in shadow mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.engine.snapshot import Decision, removal_order
from autoscaler.targets.deletion_marks import DELETION_COST
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import Install, wait_for

pytestmark = pytest.mark.e2e


def our_events(installed: Install) -> list[Any]:
    events = installed.core.list_namespaced_event(
        installed.namespace, field_selector="involvedObject.name=worker"
    )
    return [e for e in events.items if e.source and e.source.component == "startup-autoscaler"]


def managers(installed: Install) -> set[str]:
    d = installed.apps.read_namespaced_deployment("worker", installed.namespace)
    return {f.manager for f in d.metadata.managed_fields or []}


def test_shadow_mode_never_patches(installed: Install) -> None:
    target = KubernetesTarget(installed.sa, installed.namespace, "worker", shadow=True)
    try:
        state = target.observe()
        before = installed.worker_replicas()
        target.scale(Decision(desired=before + 4, reason="shadow-up"), state)
        assert target.last_outcome is not None and target.last_outcome.action == "shadow"
        target.scale(Decision(desired=0, reason="shadow-down", remove=removal_order(state.pods, 1)), state)
        assert target.last_outcome.action == "shadow"
    finally:
        target.close()
    assert installed.worker_replicas() == before
    assert "startup-autoscaler" not in managers(installed)
    for pod in installed.worker_pods():
        assert DELETION_COST not in (pod.metadata.annotations or {})
    assert our_events(installed) == []


@pytest.fixture
def hpa(installed: Install) -> Iterator[str]:
    api: Any = k8s.AutoscalingV2Api(installed.admin)
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "worker-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    api.create_namespaced_horizontal_pod_autoscaler(installed.namespace, body)
    yield "worker-hpa"
    api.delete_namespaced_horizontal_pod_autoscaler("worker-hpa", installed.namespace)


def test_an_hpa_on_the_same_deployment_is_detected_and_not_fought(installed: Install, hpa: str) -> None:
    target = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        state = target.observe()  # checks for conflicting autoscalers on the first tick
        assert target.conflict is not None
        assert (target.conflict.kind, target.conflict.name) == ("HorizontalPodAutoscaler", hpa)
        before = installed.worker_replicas()
        assert target.scale(Decision(desired=before + 3, reason="would-fight"), state) is None  # nothing set
        assert target.last_outcome is not None and target.last_outcome.action == "refused"
        assert installed.worker_replicas() == before
    finally:
        target.close()
    warnings = [e for e in our_events(installed) if e.reason == "ConflictingAutoscaler"]
    assert warnings and warnings[0].type == "Warning" and hpa in warnings[0].message
    assert not [e for e in our_events(installed) if e.reason == "SuccessfulRescale"]

    # In shadow mode the HPA is still exposed, and the target simply never acts.
    shadow = KubernetesTarget(installed.sa, installed.namespace, "worker", shadow=True)
    try:
        state = shadow.observe()
        assert shadow.conflict is not None
        assert shadow.scale(Decision(desired=before + 3, reason="shadow"), state) is None
        assert shadow.last_outcome is not None and shadow.last_outcome.action == "shadow"
    finally:
        shadow.close()


def test_the_conflict_clears_when_the_hpa_goes(installed: Install) -> None:
    target = KubernetesTarget(installed.sa, installed.namespace, "worker", conflict_check_seconds=0)
    try:
        state = target.observe()
        assert target.conflict is None
        assert (
            target.scale(Decision(desired=state.replicas + 1, reason="free-again"), state)
            == state.replicas + 1
        )
        assert target.last_outcome is not None and target.last_outcome.action == "scaled"
    finally:
        target.close()


KEDA_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {
            "kind": "ScaledObject",
            "listKind": "ScaledObjectList",
            "plural": "scaledobjects",
            "singular": "scaledobject",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


@pytest.fixture
def keda_crd(installed: Install) -> Iterator[None]:
    """KEDA's ScaledObject CRD (schema-less stand-in for the real one), unless KEDA is installed."""
    ext: Any = k8s.ApiextensionsV1Api(installed.admin)
    created = False
    try:
        ext.create_custom_resource_definition(KEDA_CRD)
        created = True
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition("scaledobjects.keda.sh")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for("the ScaledObject CRD", established, 30)
    yield
    if created:
        with contextlib.suppress(ApiException):
            ext.delete_custom_resource_definition("scaledobjects.keda.sh")


def test_a_keda_scaledobject_on_the_same_deployment_is_detected(installed: Install, keda_crd: None) -> None:
    custom: Any = k8s.CustomObjectsApi(installed.admin)
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker-keda"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},  # kind defaults to Deployment
            "triggers": [{"type": "redis", "metadata": {"listName": "jobs", "listLength": "5"}}],
        },
    }

    def create() -> bool:
        try:
            custom.create_namespaced_custom_object(
                "keda.sh", "v1alpha1", installed.namespace, "scaledobjects", scaled_object
            )
        except ApiException as exc:
            if exc.status == 404:  # the new resource is not served yet
                return False
            raise
        return True

    wait_for("the ScaledObject to be created", create, 20)
    target = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        state = target.observe()
        assert target.conflict is not None
        assert (target.conflict.kind, target.conflict.name) == ("ScaledObject", "worker-keda")
        before = installed.worker_replicas()
        assert target.scale(Decision(desired=before + 2, reason="would-fight-keda"), state) is None
        assert target.last_outcome is not None and target.last_outcome.action == "refused"
        assert installed.worker_replicas() == before
    finally:
        target.close()
        custom.delete_namespaced_custom_object(
            "keda.sh", "v1alpha1", installed.namespace, "scaledobjects", "worker-keda"
        )
