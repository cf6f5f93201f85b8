"""The kustomize manifests, rendered (``kubectl kustomize``, no cluster) and checked against the code
they run: the ConfigMap through the real config loader in the environment the Deployment gives it,
env var names against what each process reads, probe paths and ports against what it serves, RBAC
names against the config, and the properties deploy/README.md promises (PodMonitor selector, PDBs
that never block a node drain). The e2e tests (tests/e2e/test_manifests.py) apply the same
manifests to a real API server; these run without one, in ``make unit``.
"""

from __future__ import annotations

import ast
import base64
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

from api.config import ApiConfig
from autoscaler.config import AppConfig, KubernetesTargetConfig, StreamSourceConfig, parse_config
from autoscaler.targets.deletion_marks import DELETION_COST, MARK_BEFORE, MARK_OWNER
from autoscaler.targets.kube_client import own_namespace
from jobqueue.redis_url import password_in

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


SECRET_VALUE = "secret-{name}-{key}"
"""What :func:`env_values` gives a variable set from a Secret (no Secret is read here)."""


def env_values(deployment: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (fieldRefs resolved, a Secret's key
    as :data:`SECRET_VALUE`, ``$(NAME)`` of a variable defined above expanded)."""
    fields = {"metadata.namespace": namespace, "metadata.name": f"{deployment['metadata']['name']}-0"}
    env: dict[str, str] = {}
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = SECRET_VALUE.format(**var["valueFrom"]["secretKeyRef"])
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
    referenced |= {t.source.password_env for t in config.targets if t.source.password_env}
    problems = []
    for deployment in deployments(docs):
        module = module_of(deployment)
        if module is None:
            continue  # Valkey: not our code
        env = container(deployment).get("env", [])
        # A variable the kubelet puts into another's value ($(VALKEY_PASSWORD) in REDIS_URL) is used.
        expanded = {name for var in env for name in re.findall(r"\$\((\w+)\)", var.get("value", ""))}
        known = string_literals(module) | expanded | (referenced if module == "autoscaler" else set())
        for var in env:
            if var["name"] not in known:
                problems.append(f"{deployment['metadata']['name']} sets {var['name']}, which nothing reads")
            if var["name"] in SET_BY_KUBERNETES:
                problems.append(f"{deployment['metadata']['name']} overrides {var['name']}, the pod's own")
    assert problems == []


def listening_ports(deployment: dict[str, Any], config: AppConfig, namespace: str) -> dict[str, int]:
    """The ports the container's process listens on, by the name its manifest should give them, as
    its own config loader reads its environment: ``http`` (the API's clients, the probes) and, for
    the API, ``metrics`` when ``METRICS_PORT`` is a port of its own."""
    module = module_of(deployment)
    if module == "autoscaler":
        return {"http": config.port}
    env = env_values(deployment, namespace)
    if module != "api":
        return {"http": int(env["PORT"])}
    api = ApiConfig.from_env(env)
    return {"http": api.port} if api.metrics_on_api_port else {"http": api.port, "metrics": api.metrics_port}


def test_probes_and_scrape_annotations_hit_what_each_process_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port a process listens on is named, probes go to ``http``, and Prometheus to the port
    that serves ``/metrics``: the API's own (METRICS_PORT) since it left the API's port. The
    annotation's port is named ``http`` or ``metrics``, the two a PodMonitor (deploy/README.md) lists."""
    docs = rendered("base")
    config, namespace = autoscaler_config(docs, monkeypatch)
    for deployment in deployments(docs):
        module = module_of(deployment)
        if module is None:
            continue
        name, c = deployment["metadata"]["name"], container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        listens = listening_ports(deployment, config, namespace)
        assert ports == listens, name
        served = string_literals(module)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                path = c[probe]["httpGet"]["path"]
                assert c[probe]["httpGet"]["port"] == "http", (name, probe)
                assert {path} <= served, f"{name}: the {probe} asks for {path}, which {module} does not serve"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        scraped = listens.get("metrics", listens["http"])
        assert annotations["prometheus.io/port"] == str(scraped), name
        assert {n for n, port in ports.items() if port == scraped} <= {"http", "metrics"}, name
        path = annotations["prometheus.io/path"]
        assert {path} <= served, f"{name}: Prometheus is sent to {path}, which {module} does not serve"


def test_the_api_metrics_are_not_on_the_port_its_clients_reach() -> None:
    """/metrics showed every API client the per-queue submission counts. In every overlay: a port
    of its own, which the API's public Service does not route to and only the cluster may reach."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        api = find(docs, "Deployment", "api")
        namespace = api["metadata"]["namespace"]
        config = ApiConfig.from_env(env_values(api, namespace))
        assert not config.metrics_on_api_port, overlay
        public = find(docs, "Service", "api")
        assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"], overlay
        scrape = find(docs, "Service", "api-metrics")
        assert [p["targetPort"] for p in scrape["spec"]["ports"]] == ["metrics"], overlay
        assert scrape["spec"].get("type", "ClusterIP") == "ClusterIP", overlay
        assert scrape["spec"]["selector"] == public["spec"]["selector"], overlay
        metrics_rules = [r for r in ingress_for(docs, api) if {p["port"] for p in r["ports"]} == {"metrics"}]
        assert metrics_rules and all(r.get("from") == [{"namespaceSelector": {}}] for r in metrics_rules)


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


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) matches ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        matched = {
            "In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not matched:
            return False
    return True


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def ingress_for(docs: Sequence[Doc], deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ingress rule that lets traffic into ``deployment``'s pods (NetworkPolicies are additive)."""
    policies = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], pod_labels(deployment))
    ]
    assert policies, f"{deployment['metadata']['name']}: no NetworkPolicy selects its pods"
    return [rule for p in policies for rule in p["spec"].get("ingress", [])]


def test_network_policies_deny_ingress_by_default_and_let_only_the_three_parties_reach_valkey() -> None:
    """Without them any pod of any namespace could read and rewrite every job (Valkey had no password
    either). Each Deployment's pods are reachable on exactly the ports the policies name."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
        assert [p["spec"]["policyTypes"] for p in deny] == [["Ingress"]], overlay
        by_name = {d["metadata"]["name"]: d for d in deployments(docs)}
        valkey_rules = ingress_for(docs, by_name["valkey"])
        assert valkey_rules, overlay
        clients = {name for name, d in by_name.items() if name != "valkey"}
        assert clients == {"api", "worker", "autoscaler"}
        for rule in valkey_rules:
            assert [p["port"] for p in rule["ports"]] in (["redis"], [6379]), (overlay, rule)
            sources = rule["from"]
            # Pods of this namespace only: no namespaceSelector, no ipBlock.
            assert sources and all(set(src) == {"podSelector"} for src in sources), (overlay, rule)
            allowed = {
                n for n, d in by_name.items() for src in sources if selects(src["podSelector"], pod_labels(d))
            }
            assert allowed == clients, (overlay, allowed)
            assert not selects(sources[0]["podSelector"], {"app.kubernetes.io/name": "intruder"})
        # The API's port from anywhere, its metrics port and the others' HTTP ports (metrics,
        # probes) from the cluster.
        for name in ("api", "worker", "autoscaler"):
            rules = ingress_for(docs, by_name[name])
            ports = {p["port"] for rule in rules for p in rule["ports"]}
            assert ports == ({"http", "metrics"} if name == "api" else {"http"}), (overlay, name, ports)
        api_rule, metrics_rule = ingress_for(docs, by_name["api"])
        assert [p["port"] for p in api_rule["ports"]] == ["http"], overlay
        assert "from" not in api_rule, "the job API is meant to be reached from outside the namespace"
        assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"], overlay
        assert metrics_rule["from"] == [{"namespaceSelector": {}}], "the API's metrics: the cluster only"


def secret_ref(var: dict[str, Any]) -> tuple[str, str] | None:
    ref = var.get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def test_valkey_requires_the_password_of_a_secret_that_every_client_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """requirepass from a Secret (via an env var the kubelet expands into the args); the API and the
    workers put the same Secret's key into REDIS_URL the same way; the autoscaler names it in
    password_env. The base ships no Secret (a production install brings its own); the overlays
    generate one, and their references follow its hashed name."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        valkey = container(find(docs, "Deployment", "valkey"))
        args = valkey["args"]
        password_var = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
        assert password_var, (overlay, args)
        (var,) = [v for v in valkey["env"] if v["name"] == password_var[1]]
        secret = secret_ref(var)
        assert secret is not None, (overlay, var)
        secrets = [d for d in docs if d["kind"] == "Secret"]
        if overlay == "base":
            assert secrets == [], "the base must not ship a password"
        else:
            (generated,) = secrets
            assert generated["metadata"]["name"] == secret[0] and secret[1] in generated["data"], overlay
        # The readiness probe authenticates (a bare PING answers NOAUTH once a password is required).
        probe = " ".join(valkey["readinessProbe"]["exec"]["command"])
        assert f'REDISCLI_AUTH="${password_var[1]}"' in probe and "PONG" in probe, probe
        for name in ("api", "worker"):
            env = container(find(docs, "Deployment", name))["env"]
            refs = {v["name"]: secret_ref(v) for v in env}
            (url,) = [v["value"] for v in env if v["name"] == "REDIS_URL"]
            used = re.fullmatch(r"redis://:\$\((\w+)\)@valkey:6379/0", url)
            assert used and refs.get(used[1]) == secret, (overlay, name, url)
            # Defined before REDIS_URL: the kubelet expands only variables defined above.
            names = [v["name"] for v in env]
            assert names.index(used[1]) < names.index("REDIS_URL"), (overlay, name)
        config, _ = autoscaler_config(docs, monkeypatch)
        (target,) = config.targets
        assert target.source.password_env is not None
        autoscaler_env = {
            v["name"]: secret_ref(v) for v in container(find(docs, "Deployment", "autoscaler"))["env"]
        }
        assert autoscaler_env[target.source.password_env] == secret, overlay
        assert target.source.password() == SECRET_VALUE.format(name=secret[0], key=secret[1])


def test_no_password_in_a_config_map_or_a_literal_value() -> None:
    """A ConfigMap is readable by anyone who may read the namespace's config; a password belongs in
    the Secret alone. Every REDIS_URL's password is a $(reference), and no ConfigMap holds the
    generated password, a URL with credentials, or requirepass."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        passwords = {
            base64.b64decode(value).decode()
            for d in docs
            if d["kind"] == "Secret"
            for value in d.get("data", {}).values()
        }
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            for key, text in cm.get("data", {}).items():
                where = (overlay, cm["metadata"]["name"], key)
                assert not any(p in text for p in passwords), where
                assert "requirepass" not in text, where
                for url in re.findall(r"rediss?://\S+", text):
                    assert password_in(url) is None, where
        for deployment in deployments(docs):
            for var in container(deployment).get("env", []):
                value = var.get("value", "")
                assert not any(p in value for p in passwords), (overlay, var["name"])
                if value.startswith(("redis://", "rediss://")):
                    assert password_in(value) in (None, *re.findall(r"\$\(\w+\)", value)), (overlay, value)


UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
QUANTITY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3, "": 1}


def test_valkey_answers_oom_before_the_kernel_kills_it() -> None:
    """--maxmemory about 75 % of the container's memory limit: past it writes answer OOM (the API's
    503), which noeviction alone never does; the rest covers the AOF rewrite's fork and buffers."""
    for overlay in OVERLAYS:
        valkey = container(find(rendered(overlay), "Deployment", "valkey"))
        args = valkey["args"]
        assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
        value = re.fullmatch(r"(\d+)([a-z]*)", args[args.index("--maxmemory") + 1].lower())
        assert value, args
        maxmemory = int(value[1]) * UNITS[value[2]]
        limit = re.fullmatch(r"(\d+)([KMG]i?|)", valkey["resources"]["limits"]["memory"])
        assert limit
        ratio = maxmemory / (int(limit[1]) * QUANTITY[limit[2]])
        assert 0.7 <= ratio <= 0.8, (overlay, ratio)


def test_the_pod_patch_policy_holds_the_autoscaler_to_worker_deletion_costs() -> None:
    """RBAC lets the ServiceAccount patch any pod; the admission policy (cluster-scoped, bound with
    Deny) narrows that to what the daemon writes. tests/e2e/test_pod_patch_policy.py runs it."""
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        policy = find(docs, "ValidatingAdmissionPolicy")
        binding = find(docs, "ValidatingAdmissionPolicyBinding")
        assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        spec = policy["spec"]
        assert spec.get("failurePolicy", "Fail") == "Fail"
        (rule,) = spec["matchConstraints"]["resourceRules"]
        assert rule["resources"] == ["pods"] and rule["operations"] == ["UPDATE"]
        # Bound to the autoscaler's ServiceAccount in the pod's own namespace, whatever that is.
        sa = find(docs, "Deployment", "autoscaler")["spec"]["template"]["spec"]["serviceAccountName"]
        (condition,) = spec["matchConditions"]
        assert f"':{sa}'" in condition["expression"] and "request.namespace" in condition["expression"]
        text = yaml.safe_dump(spec)
        for annotation in (DELETION_COST, MARK_OWNER, MARK_BEFORE):
            assert annotation in text
        worker = find(docs, "Deployment", "worker")
        ((key, value),) = worker["spec"]["selector"]["matchLabels"].items()
        assert f"'{key}'" in text and f"== '{value}'" in text
        assert "object.spec == oldObject.spec" in text
