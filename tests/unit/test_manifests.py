"""The kustomize manifests, rendered (``kubectl kustomize``, no cluster) and checked against the code
they run: the ConfigMap through the real config loader in the environment the Deployment gives it,
env var names against what each process reads, probe paths and ports against what it serves, RBAC
names against the config, and the properties deploy/README.md promises (PodMonitor selector, PDBs
that never block a node drain). The e2e tests (tests/e2e/test_manifests.py) apply the same
manifests to a real API server; these run without one, in ``make unit``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.config import AppConfig, KubernetesTargetConfig, StreamSourceConfig, parse_config
from autoscaler.targets.kube_client import own_namespace

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
OVERLAYS = ("base", "overlays/dev", "overlays/virtual")
PART_OF = ("app.kubernetes.io/part-of", "startup-autoscaler")
PACKAGES = {"api": ("api", "jobqueue"), "worker": ("worker", "jobqueue"), "autoscaler": ("autoscaler",)}
"""The packages whose code reads a process's environment, by the module after ``python -m``."""
SET_BY_KUBERNETES = {"HOSTNAME"}
Doc = dict[str, Any]


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        required = any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("CI", "E2E_REQUIRED"))
        message = "kubectl not found: it renders the kustomize manifests (and runs the e2e tests)"
        if required:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return kubectl


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(_kustomize(KUSTOMIZE / overlay))


def renamespaced(tmp_path: Path, namespace: str, over: str = "overlays/dev") -> list[dict[str, Any]]:
    """``over`` installed into another namespace by an overlay of the operator's own.

    The overlay names ``over``'s directory, as an operator's does; ``over="rendered"`` layers it over
    the dev overlay's rendered YAML instead, as the e2e install does. kustomize rewrites the two
    differently: a RoleBinding subject naming the base's namespace followed only the second.
    """
    work = tmp_path / f"{namespace}-{over.replace('/', '-')}"
    work.mkdir()
    if over == "rendered":
        (work / "rendered.yaml").write_text(yaml.safe_dump_all(rendered("overlays/dev")))
        resource = "rendered.yaml"
    else:
        resource = os.path.relpath(KUSTOMIZE / over, work)
    overlay = {"namespace": namespace, "resources": [resource]}
    (work / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return _kustomize(work)


def find(docs: Sequence[Doc], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def deployments(docs: Sequence[Doc]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] == "Deployment")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    only: dict[str, Any]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_values(deployment: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (fieldRefs resolved)."""
    fields = {"metadata.namespace": namespace, "metadata.name": f"{deployment['metadata']['name']}-0"}
    env = {}
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def module_of(deployment: dict[str, Any]) -> str | None:
    command = container(deployment).get("command", [])
    return command[2] if command[:2] == ["python", "-m"] else None


@cache
def string_literals(module: str) -> frozenset[str]:
    """Every string constant in the code of the packages that process runs."""
    found: set[str] = set()
    for package in PACKAGES[module]:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found.update(
                n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )
    return frozenset(found)


def autoscaler_config(docs: Sequence[Doc], monkeypatch: pytest.MonkeyPatch) -> tuple[AppConfig, str]:
    """The ConfigMap's config, validated by the real loader in the autoscaler container's environment."""
    namespace = find(docs, "Deployment", "autoscaler")["metadata"]["namespace"]
    for name, value in env_values(find(docs, "Deployment", "autoscaler"), namespace).items():
        monkeypatch.setenv(name, value)
    cm = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("autoscaler-config")
    )
    return parse_config(cm["data"]["config.yaml"], "autoscaler-config"), namespace


def rules_for(role: dict[str, Any], group: str, resource: str) -> list[dict[str, Any]]:
    return [r for r in role["rules"] if group in r["apiGroups"] and resource in r["resources"]]


def test_the_autoscaler_config_map_loads_in_its_container_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for overlay in OVERLAYS:
        config, _ = autoscaler_config(rendered(overlay), monkeypatch)
        assert config.leader_election.enabled, overlay


def test_config_role_and_workloads_name_the_same_objects_in_any_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlay that sets another namespace must leave a working install: the target, the Lease
    and the RoleBinding's subject all follow (the Role grants nothing in other namespaces)."""
    installs = [renamespaced(tmp_path, "ml-serving", over) for over in ("base", "overlays/dev", "rendered")]
    for docs in (list(rendered("overlays/dev")), *installs):
        config, namespace = autoscaler_config(docs, monkeypatch)
        role, binding = find(docs, "Role", "autoscaler"), find(docs, "RoleBinding", "autoscaler")
        assert role["metadata"]["namespace"] == namespace
        assert [(s["name"], s["namespace"]) for s in binding["subjects"]] == [("autoscaler", namespace)]
        (target,) = config.targets
        assert isinstance(target.target, KubernetesTargetConfig)
        assert (target.target.namespace or own_namespace()) == namespace
        worker = find(docs, "Deployment", target.target.name)
        assert worker["metadata"]["namespace"] == namespace
        for resource in ("deployments", "deployments/scale"):
            (rule,) = rules_for(role, "apps", resource)
            assert target.target.name in rule["resourceNames"], resource
        lease = config.leader_election
        assert (lease.lease_namespace or own_namespace()) == namespace
        named = [r for r in rules_for(role, "coordination.k8s.io", "leases") if "resourceNames" in r]
        assert named and all(lease.lease_name in r["resourceNames"] for r in named)


def test_api_workers_and_autoscaler_share_one_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered("base")
    config, namespace = autoscaler_config(docs, monkeypatch)
    (target,) = config.targets
    assert isinstance(target.source, StreamSourceConfig)
    for name in ("api", "worker"):
        assert env_values(find(docs, "Deployment", name), namespace)["QUEUE"] == target.source.queue, name


def test_every_env_var_a_manifest_sets_is_read_by_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt name (REDIS_URI, MODEL_SETUP_SECOND) would be ignored silently: defaults instead."""
    docs = rendered("base")
    config, _ = autoscaler_config(docs, monkeypatch)
    referenced = {name for t in config.targets for name in re.findall(r"\$\{(\w+)", t.source.redis_url)}
    problems = []
    for deployment in deployments(docs):
        module = module_of(deployment)
        if module is None:
            continue  # Valkey: not our code
        known = string_literals(module) | (referenced if module == "autoscaler" else set())
        for var in container(deployment).get("env", []):
            if var["name"] not in known:
                problems.append(f"{deployment['metadata']['name']} sets {var['name']}, which nothing reads")
            if var["name"] in SET_BY_KUBERNETES:
                problems.append(f"{deployment['metadata']['name']} overrides {var['name']}, the pod's own")
    assert problems == []


def test_probes_and_scrape_annotations_hit_what_each_process_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered("base")
    config, namespace = autoscaler_config(docs, monkeypatch)
    for deployment in deployments(docs):
        module = module_of(deployment)
        if module is None:
            continue
        name, c = deployment["metadata"]["name"], container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        listens = config.port if module == "autoscaler" else int(env_values(deployment, namespace)["PORT"])
        assert ports == {"http": listens}, name
        served = string_literals(module)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                path = c[probe]["httpGet"]["path"]
                assert c[probe]["httpGet"]["port"] == "http", (name, probe)
                assert {path} <= served, f"{name}: the {probe} asks for {path}, which {module} does not serve"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(listens), name
        path = annotations["prometheus.io/path"]
        assert {path} <= served, f"{name}: Prometheus is sent to {path}, which {module} does not serve"


def test_every_pod_carries_the_part_of_label_a_pod_monitor_selects() -> None:
    """deploy/README.md: 'add a PodMonitor selecting app.kubernetes.io/part-of: startup-autoscaler'."""
    for overlay in OVERLAYS:
        for deployment in deployments(rendered(overlay)):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert labels.get(PART_OF[0]) == PART_OF[1], (overlay, deployment["metadata"]["name"])
            # Selectors are immutable on a live Deployment: the label must not have gone there.
            assert PART_OF[0] not in deployment["spec"]["selector"]["matchLabels"]


def test_no_disruption_budget_blocks_a_node_drain() -> None:
    """Each PDB allows one eviction at the replica count its overlay runs (a budget that allows none
    would hang `kubectl drain` forever, the reason Valkey has none)."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
            selector = pdb["spec"]["selector"]["matchLabels"]
            (deployment,) = [
                d
                for d in deployments(docs)
                if d["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
            ]
            replicas = deployment["spec"].get("replicas", 1)  # the worker's starts at 1
            spec = pdb["spec"]
            allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
            assert allowed >= 1, (overlay, pdb["metadata"]["name"], replicas)
