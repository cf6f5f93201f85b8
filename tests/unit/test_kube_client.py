"""How the Kubernetes API client is built (no API server contacted)."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

from autoscaler.targets.kube_client import load_api_client, without_retries

KUBECONFIG = textwrap.dedent(
    """
    apiVersion: v1
    kind: Config
    clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
    users: [{name: u, user: {token: t}}]
    contexts: [{name: x, context: {cluster: c, user: u}}]
    current-context: x
    """
)


def keepalive_options(client: object) -> set[tuple[int, int]]:
    options = client.rest_client.pool_manager.connection_pool_kw.get("socket_options") or []  # type: ignore[attr-defined]
    return {(level, name) for level, name, _ in options}


def test_every_client_asks_the_kernel_to_probe_idle_connections(tmp_path: Path) -> None:
    """A watch whose path died without a reset (a node or load balancer lost) waited out its read
    timeout, pooled calls too; with TCP keepalive (client-go's timings) the kernel drops it."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    client = load_api_client(str(path))
    try:
        options = keepalive_options(client)
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE) in options
        assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) in options
        retried_once = without_retries(client)  # the gated writes' client keeps it too
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE) in keepalive_options(retried_once)
        retried_once.close()  # type: ignore[no-untyped-call]
    finally:
        client.close()  # type: ignore[no-untyped-call]
