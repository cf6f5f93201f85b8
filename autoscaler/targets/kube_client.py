"""Talking to the API server: client construction, retries, error descriptions and wire formats.

Shared by everything in the autoscaler that calls the Kubernetes API (the scale target, its pod
watch, the leader elector), so that each of them loads credentials, backs off and reports a failed
call the same way:

* :func:`load_api_client` / :func:`shared_api_client`: credentials from a kubeconfig or the service
  account, one client (one connection pool) per kubeconfig per process; :func:`without_retries`
  for calls that must be one bounded attempt (gated writes: see
  :data:`~autoscaler.targets.base.WRITE_TIMEOUT_SECONDS`);
* :func:`with_retries`: transient API errors (429, 5xx, connection errors) are retried with capped
  exponential backoff and full jitter (:class:`Backoff`), honouring ``Retry-After``; anything else,
  or the last attempt's error, is raised to the caller; :class:`ApiCaller` adds a target's leadership
  gate before each attempt of a write and reports what still fails as the target being unavailable;
* :func:`describe` / :func:`status_of`: an exception as one log line, and its HTTP status;
* time and label-selector conversions: objects are kept as plain dicts from the wire (no per-event
  model deserialisation), so their timestamps and selectors are read and written here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from autoscaler.targets.base import ActGate, LeadershipLostError, TargetUnavailableError
from jobqueue.backoff import backoff_delay

log = logging.getLogger(__name__)

T = TypeVar("T")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "startup-autoscaler"
_RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})


# --------------------------------------------------------------------------------------------------
# Client construction


def without_retries(api_client: k8s.ApiClient) -> k8s.ApiClient:
    """A client like ``api_client`` (same host, credentials, token refresh) whose connection pool
    makes no retries: one call is then one attempt, bounded by its timeout (urllib3 retries a failed
    connection up to 3 times by default, each with a fresh timeout, unseen by the caller)."""
    configuration = copy.copy(api_client.configuration)
    configuration.retries = 0
    return k8s.ApiClient(configuration)


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client: ``kubeconfig`` if given, else in-cluster (service account), else ``$KUBECONFIG``
    or ``~/.kube/config``. In-cluster clients re-read the projected token as it rotates."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (k8s_config.ConfigException, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config / in-cluster service account"
        raise TargetUnavailableError(f"no Kubernetes credentials ({where}): {exc}") from exc
    # TCP keepalive with client-go's timings (30 s idle, then 9 probes 15 s apart): a connection
    # whose path died without a reset (a node, load balancer or NAT entry lost) is dropped by the
    # kernel instead of waiting out a read timeout; the pod watch's short streams bound it too.
    configuration.keep_alive = True
    return k8s.ApiClient(configuration)


def own_namespace(default: str = "default") -> str:
    """The namespace this process runs in: ``POD_NAMESPACE``, the service-account mount, or ``default``."""
    if env := os.environ.get("POD_NAMESPACE"):
        return env
    try:
        return SA_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or default
    except OSError:
        return default


_clients: dict[str | None, k8s.ApiClient] = {}
_clients_lock = threading.Lock()


def shared_api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """One API client (one connection pool) per kubeconfig path per process."""
    with _clients_lock:
        if kubeconfig not in _clients:
            _clients[kubeconfig] = load_api_client(kubeconfig)
        return _clients[kubeconfig]


# --------------------------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often and how long to retry: attempt ``i`` sleeps ``U(0, min(cap, base·2^i))``.

    Full jitter (:mod:`jobqueue.backoff`): the retries here are short ones against conflicting
    writers and a briefly unavailable server, spread as widely as their step allows.
    """

    attempts: int = 4
    base_seconds: float = 0.2
    cap_seconds: float = 4.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return backoff_delay(attempt, self.base_seconds, self.cap_seconds, rng, jitter="full")


def is_retryable(exc: BaseException) -> bool:
    """Transient: throttling, server errors, timeouts and connection failures."""
    if isinstance(exc, ApiException):
        return int(exc.status or 0) in _RETRYABLE_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def status_of(exc: BaseException) -> int | None:
    return int(exc.status or 0) if isinstance(exc, ApiException) else None


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        message = ""
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(exc.body or "")[:200]
        return f"HTTP {exc.status} {exc.reason}: {message}".strip()
    return f"{type(exc).__name__}: {exc}"


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, ApiException) and exc.headers:
        try:
            return float(exc.headers.get("Retry-After", ""))
        except (TypeError, ValueError):
            return None
    return None


def with_retries(
    what: str,
    fn: Callable[[], T],
    backoff: Backoff,
    rng: random.Random,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; retry transient failures per ``backoff``; raise the last error otherwise."""
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc) or attempt == backoff.attempts - 1:
                raise
            pause = backoff.delay(attempt, rng)
            if (after := _retry_after(exc)) is not None:
                pause = min(max(pause, after), backoff.cap_seconds)
            log.info("kubernetes: %s failed (%s); retry %d in %.2fs", what, describe(exc), attempt + 1, pause)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


class ApiCaller:
    """One target's API calls: retried (:func:`with_retries`), each attempt of a write gated, and
    what still fails raised as :class:`~autoscaler.targets.base.TargetUnavailableError` naming the
    target (``label``). Shared by the target and its collaborators, so that all of them back off
    with one ``backoff`` and one ``rng``, and report a failure alike."""

    def __init__(self, label: str, backoff: Backoff, rng: random.Random) -> None:
        self._label = label
        self._backoff = backoff
        self._rng = rng

    def __call__(self, what: str, fn: Callable[[], T], may_act: ActGate | None = None) -> T:
        """``fn`` with retries; a write passes ``may_act``, asked before each attempt (retries too)."""

        def attempt() -> T:
            if may_act is not None and not may_act():
                raise LeadershipLostError(f"no longer the acting leader; not done: {what}")
            return fn()

        try:
            return self.retried(what, attempt)
        except LeadershipLostError:
            raise
        except Exception as exc:
            hint = " (RBAC: see deploy/kustomize/base/rbac.yaml)" if status_of(exc) == 403 else ""
            raise TargetUnavailableError(f"{self._label}: {what}: {describe(exc)}{hint}") from exc

    def retried(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` with the same retries, its last error raised as it is: for calls whose failure the
        caller interprets itself (a best-effort Event, a CRD that may not exist)."""
        return with_retries(what, fn, self._backoff, self._rng)


# --------------------------------------------------------------------------------------------------
# Wire formats (objects are kept as plain dicts from the wire: no per-event model deserialisation)


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (``2024-01-02T03:04:05Z``, optionally with fractions) to epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def format_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def selector_string(selector: Mapping[str, Any]) -> str:
    """A metav1.LabelSelector (as a dict, camelCase or snake_case keys) to its string form."""
    parts = [
        f"{k}={v}"
        for k, v in sorted((selector.get("matchLabels") or selector.get("match_labels") or {}).items())
    ]
    for expr in selector.get("matchExpressions") or selector.get("match_expressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise ValueError(f"unknown label selector operator {op!r}")
    if not parts:
        raise ValueError("empty label selector: refusing to watch every pod in the namespace")
    return ",".join(parts)
