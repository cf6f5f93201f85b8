"""Helpers for the e2e tests: the cluster, the manifests installed into a namespace, ServiceAccount
clients. Everything here talks to the real API server of deploy/virtual-cluster."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "kustomize" / "overlays" / "virtual"
STATE_DIR = Path(os.environ.get("VCLUSTER_STATE", "/tmp/startup-autoscaler-vcluster"))
READY_DELAY = "startup-autoscaler.dev/ready-delay-seconds"
UP_HINT = "bash deploy/virtual-cluster/up.sh"
T = TypeVar("T")


def apps_api(api: k8s.ApiClient) -> Any:
    """Typed loosely: tests read optional fields freely and fail loudly if one is missing."""
    return k8s.AppsV1Api(api)


def core_api(api: k8s.ApiClient) -> Any:
    return k8s.CoreV1Api(api)


def close(api: k8s.ApiClient) -> None:
    api.close()  # type: ignore[no-untyped-call]


def kubeconfig_path() -> Path:
    return Path(os.environ.get("KUBECONFIG_E2E") or STATE_DIR / "kubeconfig")


def cluster_required() -> bool:
    """Whether a missing cluster fails the e2e tests: under CI, and under ``make test``, which starts it.

    Only a developer running pytest by hand, without the cluster, gets them skipped.
    """
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes"} for name in ("CI", "E2E_REQUIRED")
    )


def admin_client(path: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), client_configuration=configuration, persist_config=False
    )
    return k8s.ApiClient(configuration)


def cluster_problem(path: Path) -> str | None:
    """None when the API server answers, else why not."""
    if not path.is_file():
        return f"no kubeconfig at {path}"
    try:
        api = admin_client(path)
        k8s.VersionApi(api).get_code(_request_timeout=5)
        close(api)
    except Exception as exc:
        return f"API server of {path} not reachable: {type(exc).__name__}: {exc}"
    return None


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    return proc.stdout


def unique_namespace(prefix: str) -> str:
    return f"e2e-{prefix}-{uuid.uuid4().hex[:6]}"[:63]


def render_overlay(kubeconfig: Path, namespace: str, workdir: Path) -> Path:
    """The virtual overlay re-namespaced into ``namespace`` (kustomize also renames the Namespace
    object and the RoleBinding's subject): a fresh, independent install per test module."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rendered.yaml").write_text(kubectl(kubeconfig, "kustomize", str(OVERLAY)))
    (workdir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": ["rendered.yaml"],
            }
        )
    )
    return workdir


@dataclass
class Install:
    """The manifests applied in a fresh namespace, with an admin client and the autoscaler's."""

    namespace: str
    kubeconfig: Path
    admin: k8s.ApiClient
    sa: k8s.ApiClient
    sa_token: str
    workdir: Path
    apply_output: str

    @property
    def apps(self) -> Any:
        return apps_api(self.admin)

    @property
    def core(self) -> Any:
        return core_api(self.admin)

    def sa_kubeconfig(self) -> Path:
        """A kubeconfig file that authenticates as the autoscaler ServiceAccount (for subprocesses)."""
        cfg = self.admin.configuration
        path = self.workdir / "sa-kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "e2e",
                            "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert},
                        }
                    ],
                    "users": [{"name": "autoscaler", "user": {"token": self.sa_token}}],
                    "contexts": [
                        {
                            "name": "autoscaler",
                            "context": {"cluster": "e2e", "user": "autoscaler", "namespace": self.namespace},
                        }
                    ],
                    "current-context": "autoscaler",
                }
            )
        )
        return path

    def worker_pods(self) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector="app.kubernetes.io/name=worker")
        return [p for p in pods.items if p.metadata.deletion_timestamp is None]

    def worker_replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment_scale("worker", self.namespace).spec.replicas or 0)

    def set_worker_ready_delay(self, seconds: float) -> None:
        """Change kwok's simulated warm-up (a template change: rolls the existing pods)."""
        body = {"spec": {"template": {"metadata": {"annotations": {READY_DELAY: f"{seconds:g}"}}}}}
        self.apps.patch_namespaced_deployment(
            "worker", self.namespace, body, _content_type="application/merge-patch+json"
        )

    def wait_worker_rollout(self, timeout: float = 60) -> None:
        def done() -> bool:
            d = self.apps.read_namespaced_deployment("worker", self.namespace)
            want = d.spec.replicas or 0
            s = d.status
            return bool(
                (s.observed_generation or 0) >= (d.metadata.generation or 0)
                and (s.updated_replicas or 0) == want
                and (s.ready_replicas or 0) == want
                and (s.replicas or 0) == want
                and len(self.worker_pods()) == want
            )

        wait_for("the worker rollout", done, timeout)


def service_account_token(admin: k8s.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API (what kubelet mounts in pods)."""
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    response = core_api(admin).create_namespaced_service_account_token(name, namespace, request)
    return str(response.status.token)


def token_client(admin: k8s.ApiClient, token: str) -> k8s.ApiClient:
    """A client for the same server that authenticates with ``token`` only (no admin certificate)."""
    cfg = k8s.Configuration()
    cfg.host = admin.configuration.host
    cfg.ssl_ca_cert = admin.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return k8s.ApiClient(cfg)


def install(kubeconfig: Path, admin: k8s.ApiClient, namespace: str, workdir: Path) -> Install:
    """Apply the virtual overlay into ``namespace`` (server-side, as documented) and wait for it."""
    output = kubectl(
        kubeconfig, "apply", "--server-side", "-k", str(render_overlay(kubeconfig, namespace, workdir))
    )
    apps = apps_api(admin)
    wait_for(
        "the worker Deployment to be available",
        lambda: (apps.read_namespaced_deployment("worker", namespace).status.available_replicas or 0) >= 1,
        60,
    )
    # The ServiceAccount's token: the identity the autoscaler runs with in the cluster.
    token = service_account_token(admin, namespace, "autoscaler")
    return Install(namespace, kubeconfig, admin, token_client(admin, token), token, workdir, output)


def delete_namespace(admin: k8s.ApiClient, namespace: str) -> None:
    with contextlib.suppress(Exception):  # best effort: a leftover namespace affects no other test
        k8s.CoreV1Api(admin).delete_namespace(namespace, grace_period_seconds=0, _request_timeout=10)
