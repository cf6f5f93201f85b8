"""The scaling settings of a KEDA ScaledObject, as knobs of the ``keda`` policy (or as notes).

``import-keda --policy keda`` promises KEDA's behaviour, and much of that behaviour lives outside
the trigger: the HPA ``behavior`` under ``spec.advanced.horizontalPodAutoscalerConfig`` (scale-down
stabilization, scale-up and scale-down rate policies), ``minReplicaCount``, and the trigger's
``metricType``. Whatever the ``keda`` policy models becomes its knob; whatever it does not
(scale-to-zero activation, a ``Value`` metric, per-direction policies of different periods) is
named in a note instead of being dropped without a word.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HPA_PATH = "spec.advanced.horizontalPodAutoscalerConfig.behavior"


class BehaviorError(ValueError):
    """A behavior field that is not what the HPA API accepts; the message names it."""


def mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping ({} if absent); else the error naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BehaviorError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def whole_number(value: Any, what: str) -> float:
    """A non-negative whole number as the Kubernetes API has it (int32), possibly quoted.

    ScaledObjects are often copied out of Helm charts, where ``"{{ .Values.min }}"`` is a string.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or number < 0 or not number.is_integer():
        raise BehaviorError(f"{what} must be a whole number >= 0, got {value!r}")
    return number


def _policies(rules: Mapping[str, Any], what: str) -> dict[str, tuple[float, float]]:
    """The rules' rate policies by type (``Pods``, ``Percent``): (value, periodSeconds)."""
    raw = rules.get("policies")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise BehaviorError(f"{what}.policies must be a list, got {type(raw).__name__}")
    found: dict[str, tuple[float, float]] = {}
    for i, item in enumerate(raw):
        policy = mapping(item, f"{what}.policies[{i}]")
        kind = policy.get("type")
        if kind not in ("Pods", "Percent"):
            raise BehaviorError(f"{what}.policies[{i}].type must be Pods or Percent, got {kind!r}")
        if kind in found:
            raise BehaviorError(f"{what}.policies: more than one {kind} policy is not modelled")
        value = whole_number(policy.get("value"), f"{what}.policies[{i}].value")
        period = whole_number(policy.get("periodSeconds"), f"{what}.policies[{i}].periodSeconds")
        if period == 0:
            raise BehaviorError(f"{what}.policies[{i}].periodSeconds must be > 0")
        found[kind] = (value, period)
    return found


def _period(policies: dict[str, tuple[float, float]], what: str) -> float:
    periods = {period for _, period in policies.values()}
    if len(periods) > 1:
        raise BehaviorError(
            f"{what}.policies: Pods and Percent with different periodSeconds are not modelled"
        )
    return periods.pop()


def _select(rules: Mapping[str, Any], what: str) -> str:
    select = rules.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        raise BehaviorError(f"{what}.selectPolicy must be Max, Min or Disabled, got {select!r}")
    if select == "Min":
        raise BehaviorError(f"{what}.selectPolicy Min is not modelled (the keda policy takes the larger)")
    return str(select)


Knobs = dict[str, float | int | str]


def _scale_up(rules: Mapping[str, Any], notes: list[str]) -> Knobs:
    what = f"{HPA_PATH}.scaleUp"
    knobs: Knobs = {}
    window = rules.get("stabilizationWindowSeconds")
    if window is not None and whole_number(window, f"{what}.stabilizationWindowSeconds") > 0:
        notes.append(f"{what}.stabilizationWindowSeconds is not modelled: scale-ups are not delayed")
    if _select(rules, what) == "Disabled":
        return {"scale_up_percent": 0.0, "scale_up_pods": 0}
    policies = _policies(rules, what)
    if policies:
        knobs["scale_up_percent"] = policies.get("Percent", (0.0, 0.0))[0]
        knobs["scale_up_pods"] = int(policies.get("Pods", (0.0, 0.0))[0])
        knobs["scale_up_period"] = _period(policies, what)
    return knobs


def _scale_down(rules: Mapping[str, Any]) -> Knobs:
    what = f"{HPA_PATH}.scaleDown"
    knobs: Knobs = {}
    window = rules.get("stabilizationWindowSeconds")
    if window is not None:
        knobs["scale_down_stabilization"] = whole_number(window, f"{what}.stabilizationWindowSeconds")
    if _select(rules, what) == "Disabled":
        return {**knobs, "scale_down_percent": 0.0}
    policies = _policies(rules, what)
    if "Pods" in policies:
        raise BehaviorError(f"{what}.policies: a Pods policy for scale-down is not modelled (use Percent)")
    if policies:
        knobs["scale_down_percent"] = min(policies["Percent"][0], 100.0)
        knobs["scale_down_period"] = _period(policies, what)
    return knobs


def keda_knobs(spec: Mapping[str, Any], trigger: Mapping[str, Any], notes: list[str]) -> Knobs:
    """The ``keda`` policy's knobs for this ScaledObject's HPA settings; notes for what is not modelled.

    Raises :class:`BehaviorError` for settings whose effect the policy cannot reproduce at all
    (the import would promise a behaviour it does not deliver) or that are malformed.
    """
    advanced = mapping(spec.get("advanced"), "spec.advanced")
    hpa = mapping(
        advanced.get("horizontalPodAutoscalerConfig"), "spec.advanced.horizontalPodAutoscalerConfig"
    )
    behavior = mapping(hpa.get("behavior"), HPA_PATH)
    knobs: Knobs = {
        **_scale_up(mapping(behavior.get("scaleUp"), f"{HPA_PATH}.scaleUp"), notes),
        **_scale_down(mapping(behavior.get("scaleDown"), f"{HPA_PATH}.scaleDown")),
    }
    if hpa.get("behavior") is None:
        # KEDA then creates its HPA with no behavior field, and the HPA controller applies its older
        # rules (max(2 x, 4) per sync; the highest recent recommendation wins both ways), not the
        # behavior defaults: an empty ``behavior: {}`` is defaulted to those, an absent one is not.
        knobs["hpa_behavior"] = "none"
    metric_type = trigger.get("metricType", "AverageValue")
    if metric_type != "AverageValue":
        raise BehaviorError(
            f"the redis trigger's metricType {metric_type!r} is not modelled (AverageValue is)"
        )
    minimum = whole_number(spec.get("minReplicaCount", 0), "spec.minReplicaCount")
    knobs["min_replicas"] = max(int(minimum), 1)
    if minimum == 0:
        notes.append(
            "spec.minReplicaCount 0: KEDA's own 0 <-> 1 activation (activationListLength, cooldownPeriod, "
            "pollingInterval) is not modelled; the keda policy keeps at least 1 replica"
        )
    return knobs


def ignored_by_startup_aware(spec: Mapping[str, Any]) -> str | None:
    """A note when the ScaledObject tunes HPA behavior that the startup-aware policy replaces."""
    advanced = spec.get("advanced")
    if isinstance(advanced, Mapping) and advanced.get("horizontalPodAutoscalerConfig"):
        return (
            f"{HPA_PATH} is not carried over: the startup-aware policy scales down after one warm-up "
            "and never below the forecast's need (use --policy keda to keep the HPA's behaviour)"
        )
    return None
