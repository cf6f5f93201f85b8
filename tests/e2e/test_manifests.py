"""The kustomize manifests against the real API server: every object is accepted, every pod is
admitted (PodSecurity "restricted") and scheduled, and re-applying never fights the autoscaler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from autoscaler.engine.snapshot import Decision
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import REPO, Install, kubectl, render_overlay, wait_for

pytestmark = pytest.mark.e2e

DEPLOYMENTS = ("valkey", "api", "worker", "autoscaler")


def test_every_manifest_is_accepted(installed: Install) -> None:
    rendered = list(yaml.safe_load_all(kubectl(installed.kubeconfig, "kustomize", str(installed.workdir))))
    applied = [line for line in installed.apply_output.splitlines() if line.strip()]
    assert len(applied) == len(rendered), installed.apply_output
    assert all(line.endswith("serverside-applied") for line in applied), installed.apply_output
    kinds = {doc["kind"] for doc in rendered}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "Secret",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    } <= kinds
    assert "PodDisruptionBudget" in kinds
    # No cluster-wide grants anywhere: the autoscaler is namespaced. (The admission policy is
    # cluster-scoped, but it takes rights away, and only from this namespace's ServiceAccount.)
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


def test_every_deployment_becomes_available(installed: Install) -> None:
    """Pods pass PodSecurity admission (restricted), are scheduled on kwok nodes and become Ready."""

    def available() -> bool:
        for name in DEPLOYMENTS:
            d = installed.apps.read_namespaced_deployment(name, installed.namespace)
            if (d.status.available_replicas or 0) < (d.spec.replicas or 0) or not d.spec.replicas:
                return False
        return True

    wait_for("every Deployment to be available", available, 60)
    autoscaler = installed.apps.read_namespaced_deployment("autoscaler", installed.namespace)
    assert autoscaler.spec.replicas == 2
    assert autoscaler.spec.template.spec.service_account_name == "autoscaler"
    for name in DEPLOYMENTS:
        spec = installed.apps.read_namespaced_deployment(name, installed.namespace).spec.template.spec
        assert spec.security_context.run_as_non_root is True
        assert spec.automount_service_account_token is (name == "autoscaler")


def test_reapply_leaves_the_autoscalers_replicas_alone(installed: Install) -> None:
    """The worker manifest has no spec.replicas: a re-apply neither conflicts with the autoscaler's
    ownership of the field nor resets the count."""
    target = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        state = target.observe()
        target.scale(Decision(desired=state.replicas + 1, reason="test"), state)
        assert target.last_outcome is not None and target.last_outcome.action == "scaled"
    finally:
        target.close()
    want = state.replicas + 1
    workdir = render_overlay(installed.kubeconfig, installed.namespace, installed.workdir)
    kubectl(installed.kubeconfig, "apply", "--server-side", "-k", str(workdir))
    assert installed.worker_replicas() == want


def test_configmap_holds_a_valid_autoscaler_config(
    installed: Install, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cms = installed.core.list_namespaced_config_map(installed.namespace).items
    (cm,) = [c for c in cms if c.metadata.name.startswith("autoscaler-config")]
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(cm.data["config.yaml"])
    proc = subprocess.run(
        [sys.executable, "-m", "autoscaler", "check-config", str(path)],
        cwd=REPO,
        # As the autoscaler Deployment sets them: REDIS_URL, and the password_env from the Secret.
        env={
            "REDIS_URL": "redis://valkey:6379/0",
            "VALKEY_PASSWORD": "from-the-secret",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    config = yaml.safe_load(cm.data["config.yaml"])
    assert config["leader_election"]["enabled"] is True
    assert config["targets"][0]["target"]["name"] == "worker"
