"""e2e fixtures: the real API server of deploy/virtual-cluster and a fresh namespace per module.

The cluster comes from ``KUBECONFIG_E2E`` or ``$VCLUSTER_STATE/kubeconfig`` (default state dir
/tmp/startup-autoscaler-vcluster). If it is not up, the tests FAIL under CI (``CI=true``) and under
``make test`` (which starts it, and sets ``E2E_REQUIRED=1``), and are skipped otherwise; either way
the message says to run ``bash deploy/virtual-cluster/up.sh``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import (
    LEASE,
    UP_HINT,
    Install,
    admin_client,
    close,
    cluster_problem,
    cluster_required,
    delete_namespace,
    install,
    kubeconfig_path,
    unique_namespace,
)


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    path = kubeconfig_path()
    problem = cluster_problem(path)
    if problem is not None:
        message = f"e2e: the virtual cluster is not up ({problem}); start it with `{UP_HINT}`"
        if cluster_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def admin(kubeconfig: Path) -> Iterator[k8s.ApiClient]:
    client = admin_client(kubeconfig)
    yield client
    close(client)


def _module_prefix(request: pytest.FixtureRequest) -> str:
    name = str(request.module.__name__).rsplit(".", 1)[-1].removeprefix("test_")
    return name.replace("_", "-")[:20]


@pytest.fixture(scope="module")
def namespace(admin: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty namespace for one test module, deleted afterwards."""
    name = unique_namespace(_module_prefix(request))
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    delete_namespace(admin, name)


@pytest.fixture(scope="module")
def installed(
    kubeconfig: Path,
    admin: k8s.ApiClient,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    """deploy/kustomize/overlays/virtual applied (server-side) into a fresh namespace, plus a client
    that authenticates as the manifests' autoscaler ServiceAccount."""
    name = unique_namespace(_module_prefix(request))
    try:
        inst = install(kubeconfig, admin, name, tmp_path_factory.mktemp(name))
        yield inst
        close(inst.sa)
    finally:
        delete_namespace(admin, name)


@pytest.fixture(scope="module")
def target(installed: Install) -> Iterator[KubernetesTarget]:
    """A target on the installed worker Deployment whose pods turn Ready 1 s after they start."""
    installed.set_worker_ready_delay(1.0)
    installed.wait_worker_rollout()
    t = KubernetesTarget(installed.sa, installed.namespace, "worker")
    yield t
    t.close()


@pytest.fixture
def lease_reset(installed: Install) -> Iterator[None]:
    """No Lease before the test and none left after it: each test elects from scratch."""
    api = k8s.CoordinationV1Api(installed.admin)
    with contextlib.suppress(Exception):
        api.delete_namespaced_lease(LEASE, installed.namespace)
    yield
    with contextlib.suppress(Exception):
        api.delete_namespaced_lease(LEASE, installed.namespace)
