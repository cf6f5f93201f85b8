"""Helpers for the e2e tests: the cluster, the manifests installed into a namespace, ServiceAccount
clients. Everything here talks to the real API server of deploy/virtual-cluster."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from autoscaler.engine.snapshot import Decision, PodPhase
from autoscaler.targets.base import TargetState
from autoscaler.targets.kube_client import Backoff
from autoscaler.targets.kubernetes import KubernetesTarget
from jobqueue import WorkerInfo, WorkerState
from jobqueue import sync as jq
from tests.support.proxy import TcpProxy

LEASE = "startup-autoscaler"  # the Lease name the autoscaler's Role allows
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

    @property
    def worker_scale_patch(self) -> bytes:
        """The request line of a patch of the worker's scale (what an :class:`ApiProxy` looks for)."""
        return f"PATCH /apis/apps/v1/namespaces/{self.namespace}/deployments/worker/scale".encode()

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


class ApiProxy(TcpProxy):
    """A proxy in front of the real API server that can lose the answer to one request, or hold one
    request back for a while before the server sees it.

    Why: "the write was applied but its answer never arrived" (a read timeout, a reset connection,
    a load balancer cutting an idle stream) is what makes a retried write conflict with itself. It
    takes a connection that dies between the server's commit and the client's read, which a mock
    cannot show and stopping the server cannot produce. A held request is a slow API server: the
    answer describes the world as it was when the server got to it, not when the client asked.
    The client speaks plain HTTP to this proxy
    (so it can see the request line); the proxy speaks TLS to the API server. Each connection is
    served by one thread with non-blocking sockets, so no TLS object is used by two threads at once.
    """

    def __init__(self, api: k8s.ApiClient) -> None:
        url = urllib.parse.urlsplit(api.configuration.host)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 443)
        self._tls = ssl.create_default_context(cafile=api.configuration.ssl_ca_cert)
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._hold: tuple[bytes, float] | None = None
        self.dropped = threading.Event()
        self.held = threading.Event()  # set once a held request has been passed on
        super().__init__(self._connect_tls, name="api-proxy")

    def _connect_tls(self) -> socket.socket:
        raw = socket.create_connection(self._upstream)
        return self._tls.wrap_socket(raw, server_hostname=self._upstream[0])

    def worker_target(self, installed: Install) -> KubernetesTarget:
        """The worker's target through this proxy, as the autoscaler's ServiceAccount, retrying fast."""
        return KubernetesTarget(
            self.client(installed.sa_token),
            installed.namespace,
            "worker",
            backoff=Backoff(attempts=4, base_seconds=0.05),
        )

    def client(self, token: str) -> k8s.ApiClient:
        """A client that reaches the API server through this proxy, authenticating with ``token``."""
        cfg = k8s.Configuration()
        cfg.host = f"http://127.0.0.1:{self.port}"
        cfg.api_key = {"authorization": f"Bearer {token}"}
        return k8s.ApiClient(cfg)

    def drop_reply_to(self, marker: bytes) -> None:
        """Lose the answer to the next request containing ``marker`` (after the server executed it)."""
        with self._lock:
            self._marker = marker

    def hold_request(self, marker: bytes, seconds: float) -> None:
        """Pass the next request containing ``marker`` on to the server only ``seconds`` later."""
        with self._lock:
            self._hold = (marker, seconds)

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        assert isinstance(upstream, ssl.SSLSocket)
        upstream.setblocking(False)
        doomed = False  # the next bytes from the server answer the request to lose
        try:
            while not self._closing.is_set():
                readable = (
                    [upstream] if upstream.pending() else select.select([client, upstream], [], [], 0.5)[0]
                )
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    delay = None
                    with self._lock:
                        if self._marker is not None and self._marker in data:
                            self._marker, doomed = None, True
                        if self._hold is not None and self._hold[0] in data:
                            delay, self._hold = self._hold[1], None
                    if delay is not None:
                        time.sleep(delay)
                    upstream.setblocking(True)
                    upstream.sendall(data)
                    upstream.setblocking(False)
                    if delay is not None:
                        self.held.set()
                if upstream in readable:
                    try:
                        data = upstream.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        return
                    if doomed:
                        self.dropped.set()
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


def ready_pods(target: KubernetesTarget, count: int) -> TargetState | None:
    """The target's state once it has exactly ``count`` replicas, all of them Ready (else None)."""
    state = target.observe()
    ready = [p for p in state.pods if p.phase is PodPhase.READY]
    return state if state.replicas == count and len(ready) == count == len(state.pods) else None


def settled(installed: Install, target: KubernetesTarget, replicas: int) -> TargetState | None:
    """The target's state once the Deployment has exactly ``replicas`` pods, all Ready, as seen by the
    controllers (status), by a fresh list from the API server and by the target's watch alike."""
    d = installed.apps.read_namespaced_deployment("worker", installed.namespace)
    status = d.status
    if not (
        (status.observed_generation or 0) >= (d.metadata.generation or 0)
        and (d.spec.replicas or 0) == replicas
        and (status.replicas or 0) == (status.ready_replicas or 0) == replicas
        and len(installed.worker_pods()) == replicas
    ):
        return None
    return ready_pods(target, replicas)


def settled_scene(installed: Install, target: KubernetesTarget, replicas: int) -> TargetState:
    """``replicas`` Ready pods, with no scale-down (or up) still to be carried out by the controllers.

    Waiting on the target's watch alone is not enough: right after a scale-down of the previous
    test's 4 pods to 3, the watch can show the 3 pods this test is about to name before the
    ReplicaSet controller has even created the 4th for the earlier scale-up; it then removes one of
    the 4 (by its own ranking, any of them) while the test runs, and the pod the test called ``a``
    is gone.
    """
    state = target.observe()
    if state.replicas != replicas:
        target.scale(Decision(replicas, "scene"), state)
    # Settled twice in a row, a poll apart: a controller still catching up shows in between.
    wait_for(f"{replicas} Ready worker pods", lambda: settled(installed, target, replicas), 30)
    return wait_for(f"{replicas} Ready worker pods", lambda: settled(installed, target, replicas), 5)


def heartbeat(client: redis.Redis, state: TargetState, busy: set[str], queue: str) -> None:
    """The workers' heartbeats in ``queue``'s registry, as the worker processes would send them:
    the pods named in ``busy`` working on a job, the others idle."""
    now = time.time()
    for pod in state.pods:
        working = pod.name in busy
        info = WorkerInfo(
            name=pod.name,
            queue=queue,
            state=WorkerState.BUSY if working else WorkerState.IDLE,
            started_at=pod.created_at,
            heartbeat_at=now,
            job=f"job-{pod.name}" if working else None,
            ready_at=pod.ready_at,
        )
        jq.heartbeat(client, info)
