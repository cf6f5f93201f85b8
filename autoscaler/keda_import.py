"""Convert KEDA ScaledObjects with a ``redis`` (list) trigger into target config entries.

The point is a low-risk switch: the generated target reads the same list and scales the same
workload, and starts in shadow mode so it can run beside KEDA and be compared before the
ScaledObject is deleted (a live target refuses to fight KEDA anyway). Connection settings follow
the trigger's metadata: ``address`` or ``host``/``port`` (each also ``...FromEnv``), ``enableTLS``,
``unsafeSsl`` (``?ssl_cert_reqs=none`` on the ``rediss://`` URL: no certificate check, as in KEDA),
``databaseIndex``, ``usernameFromEnv``, ``passwordFromEnv``. Secrets stay in the environment:
values named by ``...FromEnv`` become ``${NAME}`` references, expanded by the daemon when it
connects (so the daemon's pod needs those variables, as the scaled pods had them for KEDA).

A target is named after its ScaledObject. A name that several ScaledObjects share (the same name in
different namespaces, as ``kubectl get scaledobjects -A -o yaml`` lists them) becomes
``namespace.name`` for each of them, so the file passes ``check-config`` as it is.
"""

from __future__ import annotations

import math
from collections import Counter
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
MAX_NAME = 63
"""The longest target name the config accepts (``TargetConfig.name``)."""
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


def _flag(trigger: Mapping[str, Any], key: str) -> bool:
    """A boolean trigger setting, true as KEDA's ``strconv.ParseBool`` reads it."""
    return (_meta(trigger, key) or "false").lower() in ("1", "t", "true")


def _redis_url(trigger: Mapping[str, Any], where: str, notes: list[str]) -> str:
    address = _meta(trigger, "address")
    if address is None and (env := _meta(trigger, "addressFromEnv")):
        address = _env(env)
    if address is None:
        host = _meta(trigger, "host") or (_env(e) if (e := _meta(trigger, "hostFromEnv")) else None)
        port = _meta(trigger, "port") or (_env(e) if (e := _meta(trigger, "portFromEnv")) else "6379")
        if host is None:
            raise KedaImportError(f"{where}: no address, addressFromEnv, host or hostFromEnv in the trigger")
        address = f"{host}:{port}"
    tls = _flag(trigger, "enableTLS")
    user = _meta(trigger, "usernameFromEnv")
    credentials = f"{_env(user)}@" if user else ""
    database = _meta(trigger, "databaseIndex") or "0"
    url = f"{'rediss' if tls else 'redis'}://{credentials}{address}/{database}"
    if tls and _flag(trigger, "unsafeSsl"):
        notes.append(
            f"{where}: unsafeSsl: the redis_url ends in ?ssl_cert_reqs=none, so the daemon does not verify "
            "the server's certificate (nor its host name), as KEDA did not"
        )
        url += "?ssl_cert_reqs=none"
    return url


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
    url = _redis_url(trigger, where, notes)
    source: dict[str, Any] = {"kind": "list", "key": list_name, "redis_url": url}
    if password := _meta(trigger, "passwordFromEnv"):
        source["password_env"] = password
    if auth := _mapping(trigger.get("authenticationRef"), "the redis trigger's authenticationRef", where):
        notes.append(
            f"{where}: credentials come from TriggerAuthentication {auth.get('name', '?')!r}; expose that "
            "secret to the autoscaler as an env variable and set source.password_env (or ${VAR} in redis_url)"
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
    if spec.get("idleReplicaCount") is not None:
        idle = _count(spec["idleReplicaCount"], "spec.idleReplicaCount", where)
        floor = policy_entry.get("min_replicas", entry["min_replicas"])
        notes.append(
            f"{where}: spec.idleReplicaCount {idle} is not modelled: KEDA scales to {idle} while the list "
            f"holds at most activationListLength ({_meta(trigger, 'activationListLength') or '0'}) items; "
            f"the converted target keeps at least {floor} replica{'' if floor == 1 else 's'} then"
        )
    return Conversion([entry], notes)


def _scaled_objects(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    found = []
    for doc in documents:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise KedaImportError(f"a List's items must be a list, got {type(items).__name__}")
            found.extend(_scaled_objects(items))
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
    _unique_names(result)
    return result


def _unique_names(conversion: Conversion) -> None:
    """Qualify a name several ScaledObjects share with each one's namespace (``team-a.worker``).

    The config wants unique target names; a namespace cannot contain a dot, so ``namespace.name``
    cannot be another namespace's name. Names still repeated then (one object listed twice, or two
    without ``metadata.namespace``) are refused, naming them.
    """
    shared = {name for name, count in Counter(t["name"] for t in conversion.targets).items() if count > 1}
    for target in conversion.targets:
        name, namespace = target["name"], target["target"].get("namespace")
        if name not in shared or not namespace:
            continue
        target["name"] = f"{namespace}.{name}"
        if len(target["name"]) > MAX_NAME:
            raise KedaImportError(
                f"ScaledObject {namespace}/{name}: its name is used in several namespaces, and "
                f"{target['name']!r} is longer than the {MAX_NAME} characters a target name may have"
            )
        conversion.notes.append(
            f"ScaledObject {namespace}/{name}: target named {target['name']!r} (the name {name!r} is used "
            "in more than one namespace)"
        )
    counts = Counter(t["name"] for t in conversion.targets)
    if repeated := sorted(name for name, count in counts.items() if count > 1):
        raise KedaImportError(
            f"several ScaledObjects would become target {', '.join(map(repr, repeated))} (the same name, "
            "and no namespace tells them apart); each target needs its own name"
        )


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
