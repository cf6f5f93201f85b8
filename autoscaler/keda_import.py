"""Convert KEDA ScaledObjects with a ``redis`` (list) trigger into target config entries.

The point is a low-risk switch: the generated target reads the same list and scales the same
workload, and starts in shadow mode so it can run beside KEDA and be compared before the
ScaledObject is deleted (a live target refuses to fight KEDA anyway). Connection settings follow
the trigger's metadata: ``address`` or ``host``/``port`` (each also ``...FromEnv``), ``enableTLS``,
``databaseIndex``, ``usernameFromEnv``, ``passwordFromEnv``. Secrets stay in the environment:
values named by ``...FromEnv`` become ``${NAME}`` references, expanded by the daemon when it
connects (so the daemon's pod needs those variables, as the scaled pods had them for KEDA).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoscaler.keda_behavior import (
    BehaviorError,
    ignored_by_startup_aware,
    keda_knobs,
    mapping,
    whole_number,
)

SUPPORTED_KINDS = ("Deployment", "StatefulSet")
UNSUPPORTED_REDIS = {
    "redis-streams": "a Redis stream consumer group (not a list)",
    "redis-cluster": "a Redis Cluster",
    "redis-sentinel": "a Redis Sentinel setup",
}


class KedaImportError(ValueError):
    """The input cannot be converted; the message says why and what would work."""


@dataclass
class Conversion:
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _meta(trigger: Mapping[str, Any], key: str) -> str | None:
    value = (trigger.get("metadata") or {}).get(key)
    return None if value is None else str(value)


def _mapping(value: Any, what: str, where: str) -> Mapping[str, Any]:
    try:
        return mapping(value, what)
    except BehaviorError as exc:
        raise KedaImportError(f"{where}: {exc}") from None


def _count(value: Any, what: str, where: str) -> int:
    try:
        return int(whole_number(value, what))
    except BehaviorError as exc:
        raise KedaImportError(f"{where}: {exc}") from None


def _env(name: str) -> str:
    return "${" + name + "}"


def _redis_url(trigger: Mapping[str, Any], where: str) -> str:
    address = _meta(trigger, "address")
    if address is None and (env := _meta(trigger, "addressFromEnv")):
        address = _env(env)
    if address is None:
        host = _meta(trigger, "host") or (_env(e) if (e := _meta(trigger, "hostFromEnv")) else None)
        port = _meta(trigger, "port") or (_env(e) if (e := _meta(trigger, "portFromEnv")) else "6379")
        if host is None:
            raise KedaImportError(f"{where}: no address, addressFromEnv, host or hostFromEnv in the trigger")
        address = f"{host}:{port}"
    tls = (_meta(trigger, "enableTLS") or "false").lower() == "true"
    user = _meta(trigger, "usernameFromEnv")
    credentials = f"{_env(user)}@" if user else ""
    database = _meta(trigger, "databaseIndex") or "0"
    return f"{'rediss' if tls else 'redis'}://{credentials}{address}/{database}"


def _pick_trigger(raw: Any, where: str, notes: list[str]) -> Mapping[str, Any]:
    if not isinstance(raw, list):
        raise KedaImportError(f"{where}: spec.triggers must be a list, got {type(raw).__name__}")
    triggers = [_mapping(t, f"spec.triggers[{i}]", where) for i, t in enumerate(raw)]
    types = [str(t.get("type", "?")) for t in triggers]
    redis_triggers = [t for t in triggers if t.get("type") == "redis"]
    if not redis_triggers:
        known = [f"{t} ({UNSUPPORTED_REDIS[t]})" for t in types if t in UNSUPPORTED_REDIS]
        found = ", ".join(known or types) or "none"
        raise KedaImportError(
            f"{where}: no 'redis' (list) trigger to convert; found: {found}. "
            "Only KEDA's redis list scaler (type: redis, listName) maps to this autoscaler's list source."
        )
    if len(triggers) > 1:
        others = ", ".join(t for t in types[1:]) if len(redis_triggers) == 1 else ", ".join(types)
        notes.append(
            f"{where}: {len(triggers)} triggers ({others}); only the first 'redis' trigger is converted"
        )
    return redis_triggers[0]


def convert_scaled_object(
    obj: Mapping[str, Any], *, policy: str = "startup-aware", shadow: bool = True
) -> Conversion:
    """One ScaledObject -> one target entry (plus notes for the operator)."""
    meta = _mapping(obj.get("metadata"), "metadata", "ScaledObject")
    name = str(meta.get("name") or "")
    namespace = meta.get("namespace")
    where = f"ScaledObject {str(namespace) + '/' if namespace else ''}{name or '?'}"
    if not name:
        raise KedaImportError(f"{where}: metadata.name is missing")
    spec = _mapping(obj.get("spec"), "spec", where)
    ref = _mapping(spec.get("scaleTargetRef"), "spec.scaleTargetRef", where)
    kind = ref.get("kind", "Deployment")
    if kind not in SUPPORTED_KINDS:
        raise KedaImportError(
            f"{where}: scaleTargetRef.kind {kind!r} is not supported (use Deployment or StatefulSet)"
        )
    if not ref.get("name"):
        raise KedaImportError(f"{where}: scaleTargetRef.name is missing")
    notes: list[str] = []
    trigger = _pick_trigger(spec.get("triggers") or [], where, notes)
    _mapping(trigger.get("metadata"), "the redis trigger's metadata", where)
    list_name = _meta(trigger, "listName")
    if not list_name:
        raise KedaImportError(f"{where}: the redis trigger has no metadata.listName")
    source: dict[str, Any] = {"kind": "list", "key": list_name, "redis_url": _redis_url(trigger, where)}
    if password := _meta(trigger, "passwordFromEnv"):
        source["password_env"] = password
    if trigger.get("authenticationRef"):
        auth = (trigger.get("authenticationRef") or {}).get("name", "?")
        notes.append(
            f"{where}: credentials come from TriggerAuthentication {auth!r}; expose that secret to the "
            "autoscaler as an env variable and set source.password_env (or ${VAR} in redis_url)"
        )
    raw_length = _meta(trigger, "listLength") or "5"
    try:
        list_length = float(raw_length)
    except ValueError:
        list_length = math.nan
    if not (math.isfinite(list_length) and list_length > 0):
        raise KedaImportError(
            f"{where}: the redis trigger's listLength must be a number > 0, got {raw_length!r}"
        )
    policy_entry: dict[str, Any] = {"name": policy}
    if policy == "keda":
        policy_entry["list_length"] = list_length
        behavior_notes: list[str] = []
        try:
            policy_entry.update(keda_knobs(spec, trigger, behavior_notes))
        except BehaviorError as exc:
            raise KedaImportError(f"{where}: {exc}; convert with the default policy instead") from None
        notes += [f"{where}: {note}" for note in behavior_notes]
    else:
        notes.append(
            f"{where}: KEDA's listLength={list_length:g} is replaced by slo_seconds (a latency objective); "
            "use --policy keda to reproduce KEDA's behaviour"
        )
        if note := ignored_by_startup_aware(spec):
            notes.append(f"{where}: {note}")
    target: dict[str, Any] = {"kind": "kubernetes", "workload_kind": kind, "name": ref["name"]}
    if namespace:
        target["namespace"] = namespace
    entry = {
        "name": name,
        "source": source,
        "target": target,
        "min_replicas": _count(spec.get("minReplicaCount", 0), "spec.minReplicaCount", where),
        "max_replicas": _count(spec.get("maxReplicaCount", 100), "spec.maxReplicaCount", where),
        "policy": policy_entry,
        "shadow": shadow,
    }
    return Conversion([entry], notes)


def _scaled_objects(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    found = []
    for doc in documents:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            found.extend(_scaled_objects(doc.get("items") or []))
        elif isinstance(doc, Mapping) and doc.get("kind") == "ScaledObject":
            found.append(doc)
    return found


def convert_text(text: str, *, policy: str = "startup-aware", shadow: bool = True) -> Conversion:
    """Every ScaledObject in a (multi-document) YAML text."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise KedaImportError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    objects = _scaled_objects(documents)
    if not objects:
        kinds = sorted({str(d.get("kind")) for d in documents if isinstance(d, Mapping)}) or ["none"]
        raise KedaImportError(f"no ScaledObject found (kinds: {', '.join(kinds)})")
    result = Conversion()
    for obj in objects:
        part = convert_scaled_object(obj, policy=policy, shadow=shadow)
        result.targets += part.targets
        result.notes += part.notes
    return result


def render(conversion: Conversion, origin: str) -> str:
    """The converted targets as a config file (valid on its own for ``check-config``)."""
    header = [
        f"# Converted from KEDA ScaledObject(s) in {origin} by `python -m autoscaler import-keda`.",
        "# Review: slo_seconds (latency objective), startup_seconds and service_seconds (defaults until",
        "# measured). shadow: true publishes decisions beside KEDA without acting; set it to false",
        "# after deleting the ScaledObject.",
    ]
    header += [f"# NOTE: {note}" for note in conversion.notes]
    body = yaml.safe_dump({"targets": conversion.targets}, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body
