"""The autoscaler's Kubernetes calls run with the ServiceAccount token from the manifests: the Role
is sufficient for everything the daemon does, and anything outside it is refused (403)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.engine.snapshot import Decision, PodPhase, removal_order
from autoscaler.leader import LeaderElector
from autoscaler.targets.base import TargetState, TargetUnavailableError
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import Install, core_api, wait_for

pytestmark = pytest.mark.e2e


def pods_observed(target: KubernetesTarget, count: int, *, ready: bool = False) -> TargetState | None:
    state = target.observe()
    if len(state.pods) != count or (ready and any(p.phase is not PodPhase.READY for p in state.pods)):
        return None
    return state


def test_the_role_is_sufficient_for_the_target(installed: Install) -> None:
    """observe (get workload, get scale, list+watch pods, list HPAs and ScaledObjects), scale up,
    scale down with deletion costs (patch pods), events: all as the ServiceAccount."""
    ns = installed.namespace
    target = KubernetesTarget(installed.sa, ns, "worker")
    try:
        state = target.observe()
        assert target.conflict is None
        target.scale(Decision(desired=3, reason="rbac-test-up"), state)
        assert target.last_outcome is not None and target.last_outcome.action == "scaled", target.last_outcome
        # All ready, so the ReplicaSet controller ranks them by deletion cost alone.
        state = wait_for("3 ready worker pods", lambda: pods_observed(target, 3, ready=True), 30)
        remove = removal_order(state.pods, 1)
        target.scale(Decision(desired=2, reason="rbac-test-down", remove=remove), state)
        assert target.last_outcome is not None and target.last_outcome.action == "scaled", target.last_outcome
        assert target.last_outcome.cost_patches >= 1
        # The same rescale again: the recorder bumps the existing event's count (patch events).
        state = wait_for("2 worker pods", lambda: pods_observed(target, 2), 30)
        # The pod the decision released (marked cheapest to delete, by the SA) is the one that went.
        assert remove and not set(remove) & {p.name for p in state.pods}
        target.scale(Decision(desired=3, reason="rbac-test-up"), state)
        assert target.last_outcome is not None and target.last_outcome.action == "scaled", target.last_outcome
    finally:
        target.close()
    assert installed.worker_replicas() == 3
    events = installed.core.list_namespaced_event(ns, field_selector="involvedObject.name=worker").items
    ours = {e.message: e for e in events if e.source.component == "startup-autoscaler"}
    assert ours["New size: 3; reason: rbac-test-up"].count == 2
    assert ours["New size: 2; reason: rbac-test-down"].count == 1
    assert {e.reason for e in ours.values()} == {"SuccessfulRescale"}


def test_listing_scaledobjects_is_allowed_even_without_keda(installed: Install) -> None:
    """Without the CRD the answer is 404 (not 403): the Role covers the check once KEDA exists."""
    custom = k8s.CustomObjectsApi(installed.sa)
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("keda.sh", "v1alpha1", installed.namespace, "scaledobjects")
    assert err.value.status == 404, err.value


def test_the_role_is_sufficient_for_leader_election(installed: Install) -> None:
    elector = LeaderElector(
        installed.sa,
        installed.namespace,
        "startup-autoscaler",
        lease_duration=3,
        renew_deadline=2,
        retry_period=0.5,
    )
    assert elector.try_acquire_or_renew()  # create
    assert elector.try_acquire_or_renew()  # get + update (renew)
    assert elector.is_leader()
    elector.stop(release=True)  # get + update (release)
    lease: Any = k8s.CoordinationV1Api(installed.admin).read_namespaced_lease(
        "startup-autoscaler", installed.namespace
    )
    assert not lease.spec.holder_identity


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_requests_outside_the_role_are_refused(installed: Install) -> None:
    ns = installed.namespace
    core = core_api(installed.sa)
    apps: Any = k8s.AppsV1Api(installed.sa)
    coordination: Any = k8s.CoordinationV1Api(installed.sa)
    merge = "application/merge-patch+json"
    refused = {
        "list secrets": lambda: core.list_namespaced_secret(ns),
        "get a secret": lambda: core.read_namespaced_secret("anything", ns),
        "delete the worker Deployment": lambda: apps.delete_namespaced_deployment("worker", ns),
        "patch the worker Deployment (not its scale)": lambda: apps.patch_namespaced_deployment(
            "worker", ns, {"spec": {"paused": True}}, _content_type=merge
        ),
        "list deployments": lambda: apps.list_namespaced_deployment(ns),
        "get another Deployment": lambda: apps.read_namespaced_deployment("api", ns),
        "scale another Deployment": lambda: apps.patch_namespaced_deployment_scale(
            "api", ns, {"spec": {"replicas": 5}}, _content_type=merge
        ),
        "delete a pod": lambda: core.delete_namespaced_pod(installed.worker_pods()[0].metadata.name, ns),
        "create a pod": lambda: core.create_namespaced_pod(
            ns, k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="x"), spec=k8s.V1PodSpec(containers=[]))
        ),
        "list pods in another namespace": lambda: core.list_namespaced_pod("kube-system"),
        "list nodes": core.list_node,
        "delete events": lambda: core.delete_collection_namespaced_event(ns),
        "get another Lease": lambda: coordination.read_namespaced_lease("other-lease", ns),
        "delete the Lease": lambda: coordination.delete_namespaced_lease("startup-autoscaler", ns),
        "list ConfigMaps": lambda: core.list_namespaced_config_map(ns),
    }
    statuses = {what: _status(call) for what, call in refused.items()}
    assert statuses == dict.fromkeys(refused, 403)


def test_token_is_the_service_accounts(installed: Install) -> None:
    """The client used above really is the ServiceAccount, not the admin (SelfSubjectReview)."""
    review: Any = k8s.AuthenticationV1Api(installed.sa).create_self_subject_review(
        k8s.V1SelfSubjectReview(), _request_timeout=5
    )
    assert review.status.user_info.username == f"system:serviceaccount:{installed.namespace}:autoscaler"


def test_a_workload_outside_the_role_makes_the_target_unavailable(installed: Install) -> None:
    """The loop holds on TargetUnavailableError; the message points at the RBAC rules."""
    target = KubernetesTarget(installed.sa, installed.namespace, "api")
    try:
        with pytest.raises(TargetUnavailableError, match=r"HTTP 403.*RBAC"):
            target.observe()
    finally:
        target.close()
