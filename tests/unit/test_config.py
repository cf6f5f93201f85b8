"""Config validation (errors name the field), the effective config, hot reload and import-keda."""

from __future__ import annotations

import errno
import functools
import socket
import ssl
import textwrap
from pathlib import Path

import pytest
import redis
import yaml
from kubernetes import client as k8s
from pydantic import ValidationError

from autoscaler.__main__ import main
from autoscaler.config import (
    AppConfig,
    ConfigError,
    ConfigStatus,
    ConfigWatcher,
    KubernetesTargetConfig,
    LeaderElectionConfig,
    ListSourceConfig,
    LocalTargetConfig,
    StreamSourceConfig,
    effective_yaml,
    expand_env,
    load_config,
    parse_config,
)
from autoscaler.engine.baselines import KedaPolicy
from autoscaler.engine.registry import make_policy
from autoscaler.engine.target import WorkloadSpec
from autoscaler.keda_import import KedaImportError, convert_text
from autoscaler.leader import leader_election_from_config
from autoscaler.sources.redis_source import connect

# VALID and most configs below have a local target: parsed as the demo and tests do, allowing them
# (that a config without this permission refuses them is tested on its own, below).
parse_local = functools.partial(parse_config, allow_local_targets=True)
load_local = functools.partial(load_config, allow_local_targets=True)

VALID = textwrap.dedent(
    """
    port: 9100
    targets:
      - name: resnet
        source: {kind: stream, queue: "resnet:v1", redis_url: "redis://localhost:6379/0"}
        target: {kind: kubernetes, namespace: ml, workload_kind: Deployment, name: resnet-worker}
        min_replicas: 1
        max_replicas: 40
        slo_seconds: 10
        policy: {name: startup-aware, confidence: 0.99}
      - name: legacy
        source: {kind: list, key: celery, arrivals_key: celery:pushed}
        target: {kind: local, env: {MODEL_SETUP_SECONDS: "2"}}
        policy: "keda:listLength=10"
        shadow: true
    """
)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_local(text, "cfg.yaml")
    return str(info.value)


def test_a_valid_file_gets_every_default() -> None:
    config = parse_local(VALID)
    resnet, legacy = config.targets
    assert config.port == 9100 and config.log_level == "INFO"
    assert not config.leader_election.enabled and config.leader_election.lease_duration_seconds == 15.0
    assert isinstance(resnet.source, StreamSourceConfig) and resnet.source.queue == "resnet:v1"
    assert isinstance(resnet.target, KubernetesTargetConfig) and resnet.target.name == "resnet-worker"
    assert resnet.tick_seconds == 5.0 and resnet.slots_per_pod == 1 and not resnet.shadow
    assert resnet.policy.name == "startup-aware" and resnet.policy.knobs == {"confidence": 0.99}
    assert isinstance(legacy.source, ListSourceConfig) and legacy.source.arrivals_key == "celery:pushed"
    assert isinstance(legacy.target, LocalTargetConfig) and legacy.target.command == [
        "python",
        "-m",
        "worker",
    ]
    assert legacy.policy.name == "keda:listLength=10" and legacy.shadow
    workload = resnet.workload()
    assert (workload.max_replicas, workload.slo_seconds, workload.startup_seconds) == (40, 10.0, 30.0)
    assert resnet.watch_seconds == 1.0 and workload.watch_seconds == 1.0 and workload.watching
    assert resnet.state.persist and resnet.state.save_every_seconds == 30.0
    assert resnet.state.ttl_seconds == 86400.0


def test_the_effective_config_round_trips() -> None:
    config = parse_local(VALID)
    text = effective_yaml(config)
    assert "startup_seconds: 30.0" in text and "lease_duration_seconds: 15.0" in text
    assert parse_local(text) == config


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("max_replicas: 40", "cfg.yaml: targets[0].max_replica: Extra inputs are not permitted"),
        ("min_replicas: 1", "targets[0].max_replicas: must be >= min_replicas (50)"),
        ("slo_seconds: 10", "targets[0].slo_seconds: Input should be greater than 0"),
        ("workload_kind: Deployment", "targets[0].target.workload_kind: Input should be 'Deployment' or"),
        ("confidence: 0.99", "targets[0].policy: unknown option(s) confidense for policy 'startup-aware'"),
        ('queue: "resnet:v1"', "targets[0].source.queue: invalid queue name 'resnet v1'"),
        ("kind: list", "targets[1].source: Input tag 'lists' found using 'kind' does not match"),
        ("key: celery", "targets[1].source.key: Field required"),
        ('policy: "keda:listLength=10"', "targets[1].policy: unknown policy 'magic'"),
        ("port: 9100", "port: Input should be less than or equal to 65535"),
    ],
)
def test_errors_name_the_field(change: str, expected: str) -> None:
    broken = {
        "max_replicas: 40": "max_replica: 40",
        "min_replicas: 1": "min_replicas: 50",
        "slo_seconds: 10": "slo_seconds: 0",
        "workload_kind: Deployment": "workload_kind: Pod",
        "confidence: 0.99": "confidense: 0.99",
        'queue: "resnet:v1"': 'queue: "resnet v1"',
        "kind: list": "kind: lists",
        "key: celery": "keyz: celery",
        'policy: "keda:listLength=10"': 'policy: "magic"',
        "port: 9100": "port: 99999",
    }[change]
    assert change in VALID
    assert expected in error_of(VALID.replace(change, broken, 1))


@pytest.mark.parametrize(
    ("change", "broken", "expected"),
    [
        (
            "name: resnet-worker",
            "name: Resnet_Worker",
            "targets[0].target.name: 'Resnet_Worker' is not a Kubernetes",
        ),
        ("name: resnet-worker", "name: resnet-worker.", "targets[0].target.name: 'resnet-worker.' is not"),
        ("name: resnet-worker", f"name: {'w' * 254}", "targets[0].target.name: 'www"),
        (
            "namespace: ml,",
            "namespace: ML Prod,",
            "targets[0].target.namespace: 'ML Prod' is not a Kubernetes",
        ),
        ("namespace: ml,", "namespace: ml.prod,", "targets[0].target.namespace: 'ml.prod' is not"),
        (
            "port: 9100",
            "port: 9100\nleader_election: {lease_name: My_Lease}",
            "leader_election.lease_name: 'My",
        ),
        (
            "port: 9100",
            "port: 9100\nleader_election: {lease_namespace: -ml}",
            "leader_election.lease_namespace",
        ),
    ],
)
def test_names_the_api_server_would_refuse_are_refused_at_load_time(
    change: str, broken: str, expected: str
) -> None:
    """Refused by the API server only on every call (a bad Lease name: no replica ever leads), and
    a reload that held one replaced the working loop; here they are one line naming the field."""
    assert change in VALID
    assert expected in error_of(VALID.replace(change, broken, 1))


def test_a_key_prefix_the_api_and_workers_would_refuse_is_refused() -> None:
    """Their KEY_PREFIX rule: the source would otherwise watch keys no job is ever written under."""
    for bad in ("a b", "x" * 33, '""'):
        text = VALID.replace('queue: "resnet:v1"', f'queue: "resnet:v1", prefix: {bad}', 1)
        assert "targets[0].source.prefix: " in error_of(text)
    text = VALID.replace('queue: "resnet:v1"', 'queue: "resnet:v1", prefix: tenant-1.a_b', 1)
    assert parse_local(text).targets[0].source.prefix == "tenant-1.a_b"  # type: ignore[union-attr]


def test_names_kubernetes_accepts_load() -> None:
    for name in ("w", "resnet-worker", "resnet.v2-worker", "a" * 253):
        text = VALID.replace("name: resnet-worker", f"name: {name}", 1).replace(
            "namespace: ml,", "namespace: m-1,"
        )
        (first, _) = parse_local(text).targets
        assert isinstance(first.target, KubernetesTargetConfig) and first.target.name == name


def test_the_watch_is_set_per_target_and_checked() -> None:
    text = VALID.replace("shadow: true", "shadow: true\n    watch_seconds: 0")
    assert not parse_local(text).targets[1].workload().watching
    text = VALID.replace("shadow: true", "shadow: true\n    watch_seconds: -1")
    assert "targets[1].watch_seconds: Input should be greater than or equal to 0" in error_of(text)


def test_the_policy_reset_after_errors_is_set_per_target_and_checked() -> None:
    config = parse_local(VALID)
    assert [t.policy_reset_after_errors for t in config.targets] == [3, 3]
    text = VALID.replace("shadow: true", "shadow: true\n    policy_reset_after_errors: 5")
    assert parse_local(text).targets[1].policy_reset_after_errors == 5
    for bad, message in (("0", "should be greater than or equal to 1"), ("2.5", "should be a valid integer")):
        text = VALID.replace("shadow: true", f"shadow: true\n    policy_reset_after_errors: {bad}")
        assert f"targets[1].policy_reset_after_errors: Input {message}" in error_of(text)


def test_saved_state_must_outlive_the_time_between_saves() -> None:
    text = VALID.replace("shadow: true", "shadow: true\n    state: {save_every_seconds: 60, ttl_seconds: 60}")
    assert "targets[1].state: ttl_seconds must be > save_every_seconds" in error_of(text)
    text = VALID.replace("shadow: true", "shadow: true\n    state: {persist: false, every: 1}")
    assert "targets[1].state.every: Extra inputs are not permitted" in error_of(text)


@pytest.mark.parametrize(
    ("change", "broken", "expected"),
    [
        # Each passed its lower bound and failed only at run time: every decision (OverflowError),
        # every read (a socket timeout of inf), every save of the learned state (an inf expiry).
        ("slo_seconds: 10", "startup_seconds: .inf", "targets[0].startup_seconds: Input should be a finite"),
        ("slo_seconds: 10", "slo_seconds: .inf", "targets[0].slo_seconds: Input should be a finite number"),
        (
            "key: celery",
            "key: celery, socket_timeout_seconds: .inf",
            "targets[1].source.socket_timeout_seconds: Input should be a finite number",
        ),
        (
            "shadow: true",
            "shadow: true\n    state: {ttl_seconds: .inf}",
            "targets[1].state.ttl_seconds: Input should be a finite number",
        ),
        (
            "confidence: 0.99",
            "confidence: 0.99, drain_seconds: .inf",
            "targets[0].policy: knob 'drain_seconds' must be a finite number, got inf",
        ),
        (
            'policy: "keda:listLength=10"',
            'policy: "keda:listLength=inf"',
            "targets[1].policy: knob 'list_length' must be a finite number, got 'inf'",
        ),
    ],
)
def test_infinite_values_are_refused_at_load_time(change: str, broken: str, expected: str) -> None:
    assert change in VALID
    assert expected in error_of(VALID.replace(change, broken, 1))


def test_duplicate_names_empty_targets_and_non_yaml_are_refused() -> None:
    assert "targets: target names must be unique; repeated: resnet" in error_of(
        VALID.replace("legacy", "resnet")
    )
    assert "targets: List should have at least 1 item" in error_of("targets: []")
    assert "not valid YAML" in error_of("targets: [")
    assert "expected a mapping" in error_of("- a\n- b")


def test_a_key_given_twice_is_refused_not_last_one_wins() -> None:
    """PyYAML keeps the last of two equal keys: a second max_replicas further down a hand-edited
    ConfigMap silently replaced the first."""
    twice = VALID.replace("slo_seconds: 10", "slo_seconds: 10\n    max_replicas: 400")
    message = error_of(twice)
    assert "not valid YAML" in message and "key 'max_replicas' appears twice" in message, message
    assert "line 10" in message, message
    assert parse_local(VALID).targets[0].max_replicas == 40


def test_env_references_expand_and_a_missing_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_REDIS", "redis://cache:6380/2")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert expand_env("${QUEUE_REDIS}") == "redis://cache:6380/2"
    assert expand_env("${NOT_SET_ANYWHERE:-redis://x:1}") == "redis://x:1"
    config = parse_local(VALID.replace("redis://localhost:6379/0", "${QUEUE_REDIS}"))
    assert config.targets[0].source.resolved_url() == "redis://cache:6380/2"
    assert "${QUEUE_REDIS}" in effective_yaml(config)  # the reference is printed, not a secret
    message = error_of(VALID.replace("redis://localhost:6379/0", "${NOT_SET_ANYWHERE}"))
    assert "targets[0].source.redis_url: environment variable NOT_SET_ANYWHERE is not set" in message
    assert "must start with redis://" in error_of(VALID.replace("redis://localhost:6379/0", "http://x"))


def test_leader_election_timings_must_nest() -> None:
    text = VALID + "leader_election: {enabled: true, lease_duration_seconds: 5, renew_deadline_seconds: 10}\n"
    assert "leader_election: renew_deadline_seconds must be < lease_duration_seconds" in error_of(text)


# ---- the CLI -----------------------------------------------------------------------------------------


def test_check_config_prints_the_effective_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    assert main(["check-config", "--allow-local-targets", str(path)]) == 0
    out = capsys.readouterr().out
    assert parse_local(out) == parse_local(VALID)


def test_check_config_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID.replace("max_replicas: 40", "max_replicas: -1"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"error: {path}: targets[0].max_replicas: Input should be greater than or equal to 1"
    )
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# ---- hot reload ----------------------------------------------------------------------------------------


class Applied:
    def __init__(self, fail: bool = False) -> None:
        self.configs: list[AppConfig] = []
        self.fail = fail

    def __call__(self, config: AppConfig) -> None:
        if self.fail:
            raise RuntimeError("kubeconfig not found")
        self.configs.append(config)


def test_a_changed_valid_file_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    applied = Applied()
    watcher = ConfigWatcher(path, load_local(path), applied, load=load_local)
    assert not watcher.check()  # unchanged
    path.write_text(VALID.replace("max_replicas: 40", "max_replicas: 60"))
    assert watcher.check()
    assert not watcher.check()
    assert [c.targets[0].max_replicas for c in applied.configs] == [60]
    assert watcher.status.valid and watcher.config.targets[0].max_replicas == 60


def test_a_bad_file_keeps_the_old_config_and_exposes_the_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    applied, statuses = Applied(), list[ConfigStatus]()
    watcher = ConfigWatcher(path, load_local(path), applied, load=load_local, on_status=statuses.append)
    path.write_text(VALID.replace("max_replicas: 40", "max_replicas: lots"))
    assert not watcher.check()
    assert applied.configs == [] and watcher.config.targets[0].max_replicas == 40
    assert not watcher.status.valid
    assert watcher.status.error is not None and "targets[0].max_replicas" in watcher.status.error
    assert [s.valid for s in statuses] == [False]
    assert not watcher.check()  # the same bad content is not retried (nor logged) again
    path.write_text(VALID.replace("max_replicas: 40", "max_replicas: 41"))
    assert watcher.check()
    fixed = watcher.status
    assert fixed.valid and fixed.error is None
    path.unlink()
    assert not watcher.check() and watcher.config.targets[0].max_replicas == 41


def test_a_config_that_cannot_be_applied_is_rejected_too(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    watcher = ConfigWatcher(path, load_local(path), Applied(fail=True), load=load_local)
    path.write_text(VALID.replace("max_replicas: 40", "max_replicas: 60"))
    assert not watcher.check()
    assert watcher.status.error is not None and "cannot apply: kubeconfig not found" in watcher.status.error


def test_a_configmap_style_symlink_swap_is_seen(tmp_path: Path) -> None:
    """kubelet writes a new timestamped dir and swaps the ``..data`` symlink; the file path is stable."""
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "..v1").mkdir()
    (mount / "..v1" / "config.yaml").write_text(VALID)
    (mount / "..data").symlink_to("..v1")
    (mount / "config.yaml").symlink_to("..data/config.yaml")
    applied = Applied()
    watcher = ConfigWatcher(
        mount / "config.yaml", load_local(mount / "config.yaml"), applied, load=load_local
    )
    (mount / "..v2").mkdir()
    (mount / "..v2" / "config.yaml").write_text(VALID.replace("slo_seconds: 10", "slo_seconds: 20"))
    (mount / "..data_tmp").symlink_to("..v2")
    (mount / "..data_tmp").replace(mount / "..data")
    assert watcher.check()
    assert applied.configs[0].targets[0].slo_seconds == 20.0


# ---- import-keda ------------------------------------------------------------------------------------------

SCALED_OBJECT = textwrap.dedent(
    """
    apiVersion: keda.sh/v1alpha1
    kind: ScaledObject
    metadata: {name: inference, namespace: ml}
    spec:
      scaleTargetRef: {name: worker, kind: StatefulSet}
      minReplicaCount: 2
      maxReplicaCount: 30
      triggers:
        - type: redis
          metadata:
            hostFromEnv: REDIS_HOST
            portFromEnv: REDIS_PORT
            usernameFromEnv: REDIS_USER
            passwordFromEnv: REDIS_PASSWORD
            listName: jobs
            listLength: "8"
            enableTLS: "true"
            databaseIndex: "3"
    """
)


def test_import_keda_converts_a_redis_trigger(monkeypatch: pytest.MonkeyPatch) -> None:
    conversion = convert_text(SCALED_OBJECT)
    (target,) = conversion.targets
    assert target["source"] == {
        "kind": "list",
        "key": "jobs",
        "redis_url": "rediss://${REDIS_USER}@${REDIS_HOST}:${REDIS_PORT}/3",
        "password_env": "REDIS_PASSWORD",
    }
    assert target["target"] == {
        "kind": "kubernetes",
        "workload_kind": "StatefulSet",
        "name": "worker",
        "namespace": "ml",
    }
    assert (target["min_replicas"], target["max_replicas"], target["shadow"]) == (2, 30, True)
    assert any("listLength=8" in note for note in conversion.notes)
    keda = convert_text(SCALED_OBJECT, policy="keda", shadow=False).targets[0]
    # No behavior in the ScaledObject: KEDA's HPA has none, and runs the controller's older rules.
    assert keda["policy"] == {"name": "keda", "list_length": 8.0, "hpa_behavior": "none", "min_replicas": 2}
    assert keda["shadow"] is False


def test_import_keda_output_is_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "so.yaml"
    path.write_text(
        SCALED_OBJECT.replace("hostFromEnv: REDIS_HOST", "host: redis.ml").replace("portFromEnv", "x")
    )
    assert main(["import-keda", str(path), "--policy", "keda"]) == 0
    out = capsys.readouterr().out
    for name in ("REDIS_USER", "REDIS_PASSWORD"):
        monkeypatch.setenv(name, "secret")
    config = parse_config(out)
    target = config.targets[0]
    assert target.source.resolved_url() == "rediss://secret@redis.ml:6379/3"
    assert target.policy.name == "keda"
    assert target.policy.knobs == {"list_length": 8.0, "hpa_behavior": "none", "min_replicas": 2}
    built = make_policy(target.policy.name, WorkloadSpec(), **target.policy.knobs)
    assert isinstance(built, KedaPolicy) and built.config.hpa_behavior == "none"


BEHAVIOR = """\
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 60
          policies: [{type: Percent, value: 50, periodSeconds: 30}]
        scaleUp:
          policies:
            - {type: Percent, value: 200, periodSeconds: 10}
            - {type: Pods, value: 10, periodSeconds: 10}
"""


def test_import_keda_carries_the_hpa_behavior_over_to_the_keda_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ScaledObject's HPA behavior (a 60 s scale-down window instead of 300 s, faster scale-up)
    was dropped without a word, so --policy keda did not reproduce the KEDA it replaced."""
    text = SCALED_OBJECT.replace("  minReplicaCount: 2\n", "  minReplicaCount: 2\n" + BEHAVIOR)
    conversion = convert_text(text, policy="keda")
    policy = conversion.targets[0]["policy"]
    assert policy == {
        "name": "keda",
        "list_length": 8.0,
        "scale_up_percent": 200.0,
        "scale_up_pods": 10,
        "scale_up_period": 10.0,
        "scale_down_stabilization": 60.0,
        "scale_down_percent": 50.0,
        "scale_down_period": 30.0,
        "min_replicas": 2,
    }
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_USER", "REDIS_PASSWORD"):
        monkeypatch.setenv(name, "6379" if name == "REDIS_PORT" else "x")
    config = parse_config(yaml.safe_dump({"targets": conversion.targets}))
    built = make_policy(config.targets[0].policy.name, WorkloadSpec(), **config.targets[0].policy.knobs)
    assert isinstance(built, KedaPolicy) and built.config.scale_down_stabilization == 60.0
    assert built.config.scale_up_pods == 10
    # The default policy replaces the HPA: it says so instead of dropping the settings silently.
    assert any(
        "horizontalPodAutoscalerConfig.behavior is not carried over" in n for n in convert_text(text).notes
    )
    to_zero = convert_text(text.replace("minReplicaCount: 2", "minReplicaCount: 0"), policy="keda")
    assert to_zero.targets[0]["policy"]["min_replicas"] == 1
    assert any("activation" in n and "not modelled" in n for n in to_zero.notes)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("value: 50, periodSeconds: 30", "value: 50, periodSeconds: 0"),
        ("{type: Percent, value: 50", "{type: Pods, value: 50"),
        ("type: Pods, value: 10, periodSeconds: 10", "type: Pods, value: 10, periodSeconds: 15"),
        ("stabilizationWindowSeconds: 60", "stabilizationWindowSeconds: soon"),
        ("- type: redis", "- type: redis\n      metricType: Value"),
    ],
)
def test_import_keda_refuses_hpa_behavior_it_cannot_reproduce(old: str, new: str) -> None:
    """Settings the keda policy cannot reproduce (or malformed ones) stop the keda conversion, naming
    the field, rather than promising KEDA's behaviour and delivering another."""
    text = SCALED_OBJECT.replace("  minReplicaCount: 2\n", "  minReplicaCount: 2\n" + BEHAVIOR)
    assert old in text
    with pytest.raises(
        KedaImportError, match=r"ScaledObject ml/inference: .*convert with the default policy"
    ):
        convert_text(text.replace(old, new, 1), policy="keda")


def test_import_keda_refuses_other_triggers_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    streams = SCALED_OBJECT.replace("type: redis", "type: redis-streams")
    with pytest.raises(KedaImportError, match=r"no 'redis' \(list\) trigger.*redis-streams \(a Redis stream"):
        convert_text(streams)
    with pytest.raises(KedaImportError, match="found: kafka"):
        convert_text(SCALED_OBJECT.replace("type: redis", "type: kafka"))
    with pytest.raises(KedaImportError, match=r"scaleTargetRef\.kind 'Rollout' is not supported"):
        convert_text(SCALED_OBJECT.replace("kind: StatefulSet", "kind: Rollout"))
    with pytest.raises(KedaImportError, match=r"no ScaledObject found \(kinds: Deployment\)"):
        convert_text("kind: Deployment\nmetadata: {name: x}\n")
    path = tmp_path / "so.yaml"
    path.write_text(streams)
    assert main(["import-keda", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: ScaledObject ml/inference: no 'redis'")


@pytest.mark.parametrize(
    ("change", "broken", "expected"),
    [
        # A ScaledObject copied out of a Helm chart keeps its template strings.
        (
            "minReplicaCount: 2",
            'minReplicaCount: "{{ .Values.min }}"',
            "spec.minReplicaCount must be a whole number >= 0, got '{{ .Values.min }}'",
        ),
        ("maxReplicaCount: 30", "maxReplicaCount: 2.5", "spec.maxReplicaCount must be a whole number"),
        (
            'listLength: "8"',
            'listLength: "{{ .Values.len }}"',
            "the redis trigger's listLength must be a number",
        ),
        (
            "scaleTargetRef: {name: worker, kind: StatefulSet}",
            "scaleTargetRef: worker",
            "spec.scaleTargetRef must",
        ),
        ("- type: redis", "- redis\n    - type: redis", "spec.triggers[0] must be a mapping, got str"),
        # authenticationRef is an object ({name: ...}); a bare name raised AttributeError.
        (
            "- type: redis",
            "- type: redis\n      authenticationRef: keda-trigger-auth-redis",
            "the redis trigger's authenticationRef must be a mapping, got str",
        ),
    ],
)
def test_import_keda_names_a_malformed_field_instead_of_a_traceback(
    change: str, broken: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert change in SCALED_OBJECT
    path = tmp_path / "so.yaml"
    path.write_text(SCALED_OBJECT.replace(change, broken, 1))
    assert main(["import-keda", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ScaledObject ml/inference: ") and expected in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # read_text raised UnicodeDecodeError: only OSError was caught.
        (b"kind: ScaledObject\nmetadata: {name: w\xff}\n", "not UTF-8 text (byte 0xff at offset 37)"),
        (b"kind: List\nitems: 5\n", "a List's items must be a list, got int"),
    ],
)
def test_import_keda_unreadable_input_is_one_error_line(
    content: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "so.yaml"
    path.write_bytes(content)
    assert main(["import-keda", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: {expected}\n"


def _scaled_object(name: str, namespace: str | None) -> dict[str, object]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    trigger = {"type": "redis", "metadata": {"address": f"redis.{namespace}:6379", "listName": "jobs"}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": {"scaleTargetRef": {"name": name}, "triggers": [trigger]},
    }


def test_import_keda_qualifies_a_name_used_in_several_namespaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kubectl get scaledobjects -A -o yaml`: worker in team-a and in team-b became two targets
    named worker, and the output, promised valid on its own, failed check-config."""
    objects = [_scaled_object("worker", "team-a"), _scaled_object("worker", "team-b")]
    objects.append(_scaled_object("embedder", "team-a"))
    source = tmp_path / "so.yaml"
    source.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects}))
    assert main(["import-keda", str(source)]) == 0
    converted = capsys.readouterr()
    config = tmp_path / "config.yaml"
    config.write_text(converted.out)
    assert main(["check-config", str(config)]) == 0
    assert "note: ScaledObject team-b/worker: target named 'team-b.worker'" in converted.err
    targets = load_config(config).targets
    assert [t.name for t in targets] == ["team-a.worker", "team-b.worker", "embedder"]
    assert [t.source.resolved_url() for t in targets][:2] == [
        "redis://redis.team-a:6379/0",
        "redis://redis.team-b:6379/0",
    ]
    # Nothing tells these apart: refused, naming the name, rather than written and rejected later.
    twice = [objects[0], objects[0]]
    no_namespace = [_scaled_object("w", None), _scaled_object("w", None)]
    for twins, name in ((twice, r"'team-a\.worker'"), (no_namespace, "'w'")):
        with pytest.raises(KedaImportError, match=f"several ScaledObjects would become target {name} "):
            convert_text(yaml.safe_dump_all(twins))
    long_namespace = [_scaled_object("worker", "n" * 60), _scaled_object("worker", "team-b")]
    with pytest.raises(KedaImportError, match="longer than the 63 characters"):
        convert_text(yaml.safe_dump_all(long_namespace))


IDLE = """\
  idleReplicaCount: 0
  triggers:
    - type: redis
      metadata:
        activationListLength: "3"
"""


@pytest.mark.parametrize("policy", ["keda", "startup-aware"])
def test_import_keda_names_idle_replica_count_in_a_note(policy: str) -> None:
    """KEDA scales to idleReplicaCount while the list is below activation; no policy here does.
    It was dropped without a word, though the keda policy promises KEDA's behaviour."""
    text = SCALED_OBJECT.replace("  triggers:\n    - type: redis\n      metadata:\n", IDLE)
    assert "idleReplicaCount" in text
    conversion = convert_text(text, policy=policy)
    assert (
        "ScaledObject ml/inference: spec.idleReplicaCount 0 is not modelled: KEDA scales to 0 while the "
        "list holds at most activationListLength (3) items; the converted target keeps at least 2 "
        "replicas then"
    ) in conversion.notes
    with pytest.raises(KedaImportError, match=r"spec\.idleReplicaCount must be a whole number"):
        convert_text(text.replace("idleReplicaCount: 0", "idleReplicaCount: none"), policy=policy)


def test_import_keda_unsafe_ssl_skips_certificate_checks_as_keda_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """unsafeSsl "true" was dropped: the rediss:// URL kept verifying, so against the self-signed
    server KEDA read, the daemon never read the queue."""
    text = SCALED_OBJECT.replace('enableTLS: "true"', 'enableTLS: "true"\n        unsafeSsl: "true"')
    conversion = convert_text(text, policy="keda")
    url = conversion.targets[0]["source"]["redis_url"]
    assert url == "rediss://${REDIS_USER}@${REDIS_HOST}:${REDIS_PORT}/3?ssl_cert_reqs=none"
    assert any("unsafeSsl" in note and "does not verify" in note for note in conversion.notes)
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_USER", "REDIS_PASSWORD"):
        monkeypatch.setenv(name, "6380" if name == "REDIS_PORT" else "x")
    source = parse_config(yaml.safe_dump({"targets": conversion.targets})).targets[0].source
    assert isinstance(source, ListSourceConfig)
    pool = connect(source).connection_pool  # redis-py reads the option from the URL (no connection made)
    connection = pool.connection_class(**pool.connection_kwargs)
    assert isinstance(connection, redis.SSLConnection)
    assert connection.cert_reqs == ssl.CERT_NONE and connection.check_hostname is False
    # Without TLS there is no certificate to skip, as in KEDA.
    plain = convert_text(text.replace('enableTLS: "true"', 'enableTLS: "false"'))
    assert plain.targets[0]["source"]["redis_url"] == "redis://${REDIS_USER}@${REDIS_HOST}:${REDIS_PORT}/3"


def test_replicas_sharing_a_configured_leader_identity_still_elect_one_leader() -> None:
    """The ConfigMap is every replica's: a configured identity is a prefix, never the whole name."""
    spec = LeaderElectionConfig(enabled=True, lease_namespace="default", identity="scaler")
    api = k8s.ApiClient(k8s.Configuration())  # never called: building an elector is offline
    a, b = (leader_election_from_config(spec, api_client=api) for _ in range(2))
    assert a.identity != b.identity
    assert a.identity.startswith("scaler_") and b.identity.startswith("scaler_")


def test_a_season_too_short_for_the_targets_own_tick_is_refused_at_load() -> None:
    # 30 s is 6 ticks of the default 5 s, so the policy's own check passes it; at this target's
    # 10 s tick it is 3, never fitted, and the daemon failed only when it built the policy.
    ok = VALID.replace("confidence: 0.99}", "confidence: 0.99, season_seconds: 30}")
    assert parse_local(ok).targets[0].policy.knobs["season_seconds"] == 30
    text = ok.replace("slo_seconds: 10", "slo_seconds: 10\n    tick_seconds: 10")
    assert (
        "targets[0]: startup-aware: season_seconds: 30 s is shorter than 5 ticks of 10 s (50 s)"
        in error_of(text)
    )


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_config_file_that_is_not_utf8_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"port: 9100\n\xd0\xff\xfe targets: []\n")
    args = ["run", "--config", str(path)] if command == "run" else ["check-config", str(path)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {path}: not UTF-8 text (byte 0xd0 at offset 11)\n"


def runnable(tmp_path: Path) -> Path:
    """A config ``run`` can start without a cluster or a server (its loops fail their ticks only)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "port: 0\nhost: 127.0.0.1\ntargets:\n  - name: t\n"
        '    source: {kind: stream, queue: "t:v1", redis_url: "redis://127.0.0.1:1/0"}\n'
        f"    target: {{kind: local, log_dir: {tmp_path / 'logs'}}}\n"
        "    min_replicas: 0\n    max_replicas: 1\n"
    )
    return path


@pytest.fixture()
def quiet_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` without its process-wide side effects: JSON logging on the root, signal handlers."""
    monkeypatch.setattr("autoscaler.__main__.setup_logging", lambda level: None)
    monkeypatch.setattr("autoscaler.__main__.signal.signal", lambda *args: None)


@pytest.mark.parametrize("port", ["-1", "70000"])
@pytest.mark.usefixtures("quiet_run")
def test_run_port_out_of_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    assert main(["run", "--config", str(runnable(tmp_path)), "--port", port]) == 2
    assert (
        capsys.readouterr().err == f"error: --port must be within 0..65535 (0: any free port), got {port}\n"
    )


@pytest.mark.usefixtures("quiet_run")
def test_run_port_in_use_names_the_port_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = runnable(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["run", "--allow-local-targets", "--config", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: port {port} is already in use on 127.0.0.1: pass another --port"), err
    assert err.count("\n") == 1
    assert not any(record.exc_info for record in caplog.records)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("", "neither an IP address nor a host name"),
        ("[::]", "without the brackets: '::'"),
        ("0.0.0.0:9090", "the port is the `port` field"),
        ("http://metrics", "neither an IP address nor a host name"),
    ],
)
def test_a_host_that_is_no_address_nor_name_is_refused(host: str, problem: str) -> None:
    message = error_of(VALID + f'host: "{host}"\n')
    assert message.startswith("cfg.yaml: host: ") and problem in message, message


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "::1", "127.0.0.1", "fe80::1%eth0", "localhost", "metrics.ml.svc."]
)
def test_addresses_and_host_names_are_accepted(host: str) -> None:
    assert parse_local(VALID + f'host: "{host}"\n').host == host


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("192.0.2.1", "is not an address this machine can listen on"),  # TEST-NET-1: no machine's
        ("no-such-host.invalid", "does not resolve"),  # .invalid never resolves (RFC 6761)
    ],
)
@pytest.mark.usefixtures("quiet_run")
def test_run_on_a_host_it_cannot_listen_on_names_the_field_without_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    host: str,
    named: str,
) -> None:
    """It was exit status 1 and "cannot start: [Errno 99] Cannot assign requested address" after a
    logged traceback, naming no setting."""
    path = runnable(tmp_path)
    path.write_text(path.read_text().replace("host: 127.0.0.1", f"host: {host}"))
    assert main(["run", "--allow-local-targets", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: host {host!r} {named} ") and f"set host: in {path}" in err, err
    assert err.count("\n") == 1
    assert not any(record.exc_info for record in caplog.records)


def test_why_a_port_cannot_be_listened_on_names_the_setting_to_change() -> None:
    from autoscaler.__main__ import _cannot_listen
    from autoscaler.metrics import ListenError

    denied = ListenError("0.0.0.0", 80, PermissionError(errno.EACCES, "Permission denied"))
    assert _cannot_listen(denied, "c.yaml", port_given=False) == (
        "port 80 on 0.0.0.0 may not be listened on (Permission denied; ports below 1024 need "
        "privileges): pass another port: in c.yaml (0: any free)"
    )
    assert "pass another --port" in (_cannot_listen(denied, "c.yaml", port_given=True) or "")
    link_local = ListenError("fe80::1", 9090, OSError(errno.EINVAL, "Invalid argument"))
    assert "fe80::1%eth0" in (_cannot_listen(link_local, "c.yaml", port_given=False) or "")
    # Out of file descriptors is no setting's fault: run reports it as a failure (exit 1).
    assert (
        _cannot_listen(ListenError("::", 9090, OSError(errno.EMFILE, "Too many open files")), "c", False)
        is None
    )


def test_a_password_in_the_url_and_password_env_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py lets the URL's password win, so password_env's secret was silently never used."""
    monkeypatch.setenv("QUEUE_PASSWORD", "from-env")
    monkeypatch.setenv("URL_WITH_PASSWORD", "redis://:in-url@redis:6379/0")
    both = textwrap.dedent(
        """
        targets:
          - name: a
            source: {kind: stream, queue: "m:v1", redis_url: "URL", password_env: QUEUE_PASSWORD}
            target: {kind: local}
        """
    )
    for url in (
        "redis://:in-url@redis:6379/0",
        "redis://user:in-url@redis/0",
        "${URL_WITH_PASSWORD}",
        "redis://redis:6379/0?password=in-url",  # redis-py's query form, which wins over it too
        "unix:///run/valkey.sock?db=1&password=in-url",
    ):
        message = error_of(both.replace("URL", url))
        assert "redis_url has a password and password_env names another" in message, message
        assert "in-url" not in message and "from-env" not in message
    for url in ("redis://redis:6379/0", "redis://user@redis/0", "redis://:@redis/0"):
        assert parse_local(both.replace("URL", url)).targets[0].source.password() == "from-env"


# ---- local targets: only the process that starts the daemon may allow them ---------------------------


def test_a_local_target_is_refused_unless_the_process_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local target's `command` runs in the autoscaler's pod, beside its ServiceAccount token:
    whoever could edit the ConfigMap could run anything there. Refused by default, naming the field
    and how to allow it; allowed only by the caller (the command line's flag, the demo, tests)."""
    with pytest.raises(ConfigError) as info:
        parse_config(VALID, "cfg.yaml")
    message = str(info.value)
    assert message.startswith("cfg.yaml: targets[1].target.kind: local targets start their `command`"), (
        message
    )
    assert "--allow-local-targets" in message and "cannot allow them" in message
    assert message.count("targets[") == 1  # the Kubernetes target beside it is fine
    hostile = VALID.replace(
        'target: {kind: local, env: {MODEL_SETUP_SECONDS: "2"}}',
        'target: {kind: local, command: ["sh", "-c", "cat /var/run/secrets/token"], allow: true}',
    )
    assert "targets[1].target.kind: local targets" in error_of_refused(hostile)
    assert isinstance(parse_config(VALID, allow_local_targets=True).targets[1].target, LocalTargetConfig)
    with pytest.raises(ValidationError, match="local targets start"):  # a bare model_validate too
        LocalTargetConfig.model_validate({"kind": "local"})
    with pytest.raises(ValidationError, match="local targets start"):
        LocalTargetConfig()

    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    with pytest.raises(ConfigError, match=r"targets\[1\]\.target\.kind: local targets"):
        load_config(path)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: targets[1].target.kind: local targets") and err.count("\n") == 1
    assert main(["check-config", "--allow-local-targets", str(path)]) == 0
    assert "kind: local" in capsys.readouterr().out


def error_of_refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    return str(info.value)


@pytest.mark.usefixtures("quiet_run")
def test_run_refuses_a_local_target_without_the_flag_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = runnable(tmp_path)
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: targets[0].target.kind: local targets start"), err
    assert "--allow-local-targets" in err and err.count("\n") == 1
    assert not (tmp_path / "logs").exists()  # no worker was started


def test_a_reload_through_the_default_loader_cannot_add_a_local_target(tmp_path: Path) -> None:
    """The watcher's loader is the process's: without the permission, a ConfigMap edit that adds a
    local target is a rejected file, naming the field, and the running config stays."""
    kube_only = VALID.split("  - name: legacy")[0]
    path = tmp_path / "config.yaml"
    path.write_text(kube_only)
    applied = Applied()
    watcher = ConfigWatcher(path, load_config(path), applied)
    path.write_text(VALID)
    assert not watcher.check()
    assert applied.configs == [] and len(watcher.config.targets) == 1
    assert (
        watcher.status.error is not None and "targets[1].target.kind: local targets" in watcher.status.error
    )


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ("slo_seconds: 4", "slo_seconds (4) must be longer than service_seconds (5)"),  # the default 5
        (
            "slo_seconds: 30\n    service_seconds: 30",
            "slo_seconds (30) must be longer than service_seconds (30)",
        ),
    ],
)
def test_an_slo_no_job_can_meet_is_refused_naming_both_fields(fields: str, shown: str) -> None:
    """Every job's latency is at least its service time: the policy spent up to max_replicas on
    0 % within the SLO, accepted without a word."""
    text = KUBE_TARGET + f"    {fields}\n"
    message = error_of_refused(text)
    assert message.startswith(f"cfg.yaml: targets[0]: {shown}: every job's latency is at least"), message
    assert parse_config(KUBE_TARGET + "    slo_seconds: 5.5\n").targets[0].slo_seconds == 5.5


KUBE_TARGET = textwrap.dedent(
    """
    targets:
      - name: resnet
        source: {kind: stream, queue: "resnet:v1", redis_url: "redis://localhost:6379/0"}
        target: {kind: kubernetes, name: resnet-worker}
    """
)


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ("watch_seconds: 5", "watch_seconds 5 is not below tick_seconds 5"),
        ("tick_seconds: 2\n    watch_seconds: 3", "watch_seconds 3 is not below tick_seconds 2"),
    ],
)
def test_a_watch_written_no_shorter_than_the_tick_is_refused(fields: str, shown: str) -> None:
    """The watch looks between ticks: written at a tick or more, the daemon turned it off silently."""
    message = error_of_refused(KUBE_TARGET + f"    {fields}\n")
    assert message.startswith(f"cfg.yaml: targets[0]: {shown}: the watch looks between ticks"), message


def test_the_default_watch_under_a_one_second_tick_is_simply_off() -> None:
    target = parse_config(KUBE_TARGET + "    tick_seconds: 1\n").targets[0]
    assert not target.workload().watching
    assert (
        parse_config(KUBE_TARGET + "    tick_seconds: 1\n    watch_seconds: 0\n").targets[0].watch_seconds
        == 0
    )


@pytest.mark.parametrize(
    ("fields", "bounds"),
    [
        ("policy: static:60\n    max_replicas: 20", "1..20"),
        ("policy: static:2\n    min_replicas: 3", "3..20"),
    ],
)
def test_a_static_pool_outside_the_bounds_is_refused(fields: str, bounds: str) -> None:
    """The bounds win over every decision: static:60 under a ceiling of 20 ran 20 pods."""
    message = error_of_refused(KUBE_TARGET + f"    {fields}\n")
    assert f"is outside min_replicas..max_replicas ({bounds})" in message, message
    assert parse_config(KUBE_TARGET + "    policy: static:20\n").targets[0].policy.name == "static:20"
