"""Another autoscaler on the same workload: an HPA or a KEDA ScaledObject that the target defers to.

Two autoscalers setting one workload's ``spec.replicas`` fight: each undoes the other's count every
tick, and pods are created and deleted for nothing. So every ``conflict_check_seconds`` the target
lists the HorizontalPodAutoscalers (autoscaling/v2) and KEDA ScaledObjects (keda.sh/v1alpha1, when
the CRD exists) in its namespace, and while one targets the same workload it refuses to act (unless
it is in shadow mode), with a ``ConflictingAutoscaler`` Warning Event on the workload when the
conflict appears. A list that fails keeps what was known: a conflict is not forgotten because the
API server did not answer.

Only a process that may act (the loop's ``may_act`` gate: the leader) records the Event. Every
replica still lists, as it observes: reads change nothing, and a standby that takes over then
knows the conflict before its first decision. A conflict seen but not reported (by a standby, or
while the gate was closed) is reported as soon as the gate opens, once per process and conflict.
Before, every replica created its own Event: each conflict was reported twice with two replicas.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from autoscaler.targets.base import ActGate, TargetUnavailableError
from autoscaler.targets.events import EventRecorder
from autoscaler.targets.kube_client import ApiCaller, describe, status_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Conflict:
    """Another autoscaler that scales the same workload."""

    kind: str  # HorizontalPodAutoscaler | ScaledObject
    name: str
    api_version: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.api_version})"


class ConflictCheck:
    """Finds an HPA or ScaledObject that scales the target's workload (see the module docstring)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        *,
        kind: str,
        workload: str,
        label: str,
        shadow: bool,
        every_seconds: float,
        call: ApiCaller,
        events: EventRecorder,
        request_timeout: tuple[float, float],
    ) -> None:
        """``label`` names the target in logs; ``shadow`` targets warn in the log only (no Event), as
        they would not act anyway; ``call`` is the target's (its retries and error reports)."""
        self._namespace = namespace
        self._kind = kind
        self._workload = workload
        self._label = label
        self._shadow = shadow
        self._autoscaling = k8s.AutoscalingV2Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._every = every_seconds
        self._call = call
        self._events = events
        self._timeout = request_timeout
        self._conflict: Conflict | None = None
        self._reported: Conflict | None = None  # the conflict this process has an Event for
        self._checked: float | None = None
        self._keda_absent_logged = False

    @property
    def conflict(self) -> Conflict | None:
        """The HPA or ScaledObject found by the latest check, if any."""
        return self._conflict

    def check(self, may_act: ActGate) -> Conflict | None:
        """List HPAs and ScaledObjects in the namespace; remember and return one targeting us.

        The Event for a new conflict is recorded only if ``may_act()`` (see the module docstring)."""
        found: Conflict | None = None
        try:
            hpas: Any = self._call(
                f"list horizontalpodautoscalers in {self._namespace}",
                lambda: self._autoscaling.list_namespaced_horizontal_pod_autoscaler(
                    self._namespace, _preload_content=False, _request_timeout=self._timeout
                ),
            )
            for item in json.loads(hpas.data).get("items") or []:
                ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
                if ref.get("kind") == self._kind and ref.get("name") == self._workload:
                    found = Conflict("HorizontalPodAutoscaler", item["metadata"]["name"], "autoscaling/v2")
                    break
        except TargetUnavailableError as exc:
            log.warning("kubernetes: %s: cannot check for HPAs: %s", self._label, exc)
            found = self._conflict  # unknown: keep what was known
        if found is None:
            found = self._check_keda()
        if found != self._conflict:
            if found is not None:
                log.warning(
                    "kubernetes: %s: %s targets the same workload; this target will not act",
                    self._label,
                    found,
                )
            else:
                log.info("kubernetes: %s: the conflicting autoscaler is gone; acting again", self._label)
        self._conflict = found
        self._checked = time.monotonic()
        self._report(may_act)
        return found

    def _report(self, may_act: ActGate) -> None:
        """Record the Event for the known conflict, unless reported already or this process may not act."""
        found = self._conflict
        if found is None:
            self._reported = None  # one that comes back is a new conflict
            return
        if self._shadow or found == self._reported or not may_act():
            return
        self._events.record(
            "Warning",
            "ConflictingAutoscaler",
            f"{found} also scales this {self._kind}; startup-autoscaler will not act until "
            "it is removed (or the target is set to shadow mode)",
        )
        self._reported = found

    def _check_keda(self) -> Conflict | None:
        try:
            resp: Any = self._call.retried(
                "list scaledobjects",
                lambda: self._custom.list_namespaced_custom_object(
                    "keda.sh",
                    "v1alpha1",
                    self._namespace,
                    "scaledobjects",
                    _preload_content=False,
                    _request_timeout=self._timeout,
                ),
            )
        except Exception as exc:
            status = status_of(exc)
            if status in (404, 403):
                if not self._keda_absent_logged:
                    self._keda_absent_logged = True
                    log.info(
                        "kubernetes: %s: no KEDA ScaledObjects to check (%s)",
                        self._label,
                        "CRD not installed" if status == 404 else "not allowed to list them",
                    )
                return None
            log.warning("kubernetes: %s: cannot check for KEDA ScaledObjects: %s", self._label, describe(exc))
            return self._conflict if self._conflict and self._conflict.kind == "ScaledObject" else None
        for item in json.loads(resp.data).get("items") or []:
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind", "Deployment") == self._kind and ref.get("name") == self._workload:
                return Conflict("ScaledObject", item["metadata"]["name"], "keda.sh/v1alpha1")
        return None

    def maybe_check(self, may_act: ActGate) -> None:
        """:meth:`check`, if none was made yet or the last is ``every_seconds`` old; else only report
        a known conflict not reported yet, if ``may_act()`` now (a standby that took over)."""
        due = self._checked is None or time.monotonic() - self._checked >= self._every
        if due:
            self.check(may_act)
        else:
            self._report(may_act)
