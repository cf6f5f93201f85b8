"""core/v1 Events on the scaled workload: what ``kubectl describe`` shows the autoscaler did.

The target reports a rescale (``SuccessfulRescale``, like the HPA's), a failed one and a conflicting
autoscaler as Events on the Deployment or StatefulSet, where an operator looks first. A repeat of
the same Event within an hour bumps its ``count`` (one patch) instead of adding another object, as
client-go's recorder does, so that a target failing every tick does not flood the namespace.

Best effort: an Event that cannot be recorded is logged, never raised; the decision it reports has
been made (or carried out) either way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.targets.kube_client import MERGE_PATCH, ApiCaller, describe, format_time

log = logging.getLogger(__name__)

COMPONENT = "startup-autoscaler"
REPEAT_WINDOW_SECONDS = 3600
"""A repeat within this long of the last occurrence is counted on the same Event."""
MAX_RECORDS = 256
"""Events remembered for counting repeats: the least recently seen is forgotten first."""


@dataclass(slots=True)
class _EventRecord:
    name: str
    count: int
    first: float
    last: float


class EventRecorder:
    """Records Events on one workload and counts their repeats (see the module docstring)."""

    def __init__(
        self,
        core: k8s.CoreV1Api,
        namespace: str,
        *,
        kind: str,
        workload: str,
        uid: Callable[[], str | None],
        label: str,
        instance: str,
        request_timeout: tuple[float, float],
        call: ApiCaller,
    ) -> None:
        """``uid`` is asked at each new Event: the workload's uid as the target knows it then (None
        before the workload was read). ``label`` names the target in logs; ``instance`` is this
        replica (``reportingInstance``)."""
        self._core = core
        self._namespace = namespace
        self._kind = kind
        self._workload = workload
        self._uid = uid
        self._label = label
        self._instance = instance
        self._timeout = request_timeout
        self._call = call
        self._records: dict[tuple[str, str], _EventRecord] = {}

    def forget(self) -> None:
        """Forget the Events recorded so far (the workload was re-created: they name the old uid)."""
        self._records = {}

    def record(self, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on the workload; repeats within an hour bump ``count`` instead.

        Best effort, as in client-go's recorder: a failure is logged, never raised.
        """
        now = time.time()
        key = (reason, message)
        rec = self._records.get(key)
        try:
            if rec is not None and now - rec.last < REPEAT_WINDOW_SECONDS:
                body = {"count": rec.count + 1, "lastTimestamp": format_time(now)}
                try:
                    self._call.retried(
                        "patch event",
                        lambda: self._core.patch_namespaced_event(
                            rec.name,
                            self._namespace,
                            body,
                            _content_type=MERGE_PATCH,
                            _request_timeout=self._timeout,
                        ),
                    )
                    rec.count += 1
                    rec.last = now
                    return
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            name = f"{self._workload}.{time.time_ns():x}"
            stamp = datetime.fromtimestamp(int(now), UTC)
            event = k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(name=name, namespace=self._namespace),
                involved_object=k8s.V1ObjectReference(
                    api_version="apps/v1",
                    kind=self._kind,
                    name=self._workload,
                    namespace=self._namespace,
                    uid=self._uid(),
                ),
                type=type_,
                reason=reason,
                message=message[:1024],
                source=k8s.V1EventSource(component=COMPONENT),
                reporting_component=COMPONENT,
                reporting_instance=self._instance[:128],
                first_timestamp=stamp,
                last_timestamp=stamp,
                count=1,
            )
            self._call.retried(
                "create event",
                functools.partial(
                    self._core.create_namespaced_event, self._namespace, event, _request_timeout=self._timeout
                ),
            )
            self._records[key] = _EventRecord(name, 1, now, now)
            if len(self._records) > MAX_RECORDS:
                oldest = min(self._records, key=lambda k: self._records[k].last)
                del self._records[oldest]
        except Exception as exc:
            log.warning("kubernetes: %s: could not record event %s: %s", self._label, reason, describe(exc))
