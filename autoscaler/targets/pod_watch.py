"""The pods of one workload, kept in memory from a list+watch: what each tick's pod phases and
measured startups are read from, with no API call per tick.

One watch per workload, re-listed only on 410 Gone or a broken stream (after a jittered backoff on
errors), resumed from the last resourceVersion when the server ends it normally. Each pod is kept as
a :class:`WatchedPod`: its phase, Ready time and creation (for startup samples), and the deletion
cost annotations with our records of them (see :mod:`autoscaler.targets.deletion_marks`), along with
the resourceVersion any patch computed from that view must name.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from autoscaler.engine.snapshot import PodPhase, PodView
from autoscaler.targets.deletion_marks import DELETION_COST, MARK_BEFORE, MARK_OWNER
from autoscaler.targets.kube_client import Backoff, describe, parse_time, status_of

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = (30, 60)
"""The server ends each watch stream after a time drawn from this range, and the watch reopens it
from where it was. Short, because a stream can go silent without being closed (a node, load
balancer or NAT entry lost on the way: no reset ever arrives), and then only the read timeout
ends it: at 240-360 s, the pod list the policy planned from stayed frozen for up to 6.5 minutes,
Ready pods unseen and no error raised. TCP keepalive (``kube_client.load_api_client``) drops a
path that really died, after about 165 s; a short stream also bounds a silence that keepalive
cannot see (a proxy that answers probes). A reopen a minute is one cheap request (it resumes from
the last resourceVersion)."""

WATCH_READ_SLACK_SECONDS = 10
"""A watch stream's read timeout is its server-side timeout plus this: a silent stream fails then."""


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid in the pod's ownerReference marked ``controller: true``, if any."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid"):
            return str(ref["uid"])
    return None


def newly_ready(pod: WatchedPod, previous: WatchedPod | None) -> bool:
    """Whether ``pod`` is Ready and ``previous`` (the record of the same name, if any) was not that
    pod Ready: another pod under the name counts as new. A StatefulSet re-creates its pods under
    their names; compared by name alone, one replaced while the watch re-listed was Ready "before"
    (its predecessor was) and its warm-up was never counted."""
    if pod.ready_at is None:
        return False
    return previous is None or previous.uid != pod.uid or previous.ready_at is None


@dataclass(slots=True)
class WatchedPod:
    """The facts kept per pod from the watch.

    ``created_at`` is the pod's ``metadata.creationTimestamp``, or None when the object carries none.
    The API server always sets it, so None means a malformed object (a hand-written watch event, a
    proxy or a test double that drops it), and nothing about the pod's age is known. It is never
    read as the epoch: that turned its Ready transition into a startup sample of about 1.7e9 s,
    which a p90 of a few samples plans with for as long as it is among them, and made a starting
    pod look created decades ago, hence projected Ready "now", so the policy counted capacity that
    was still warming up (too few pods, exactly while a burst was being served).

    Such a pod instead counts as created when this watch first saw it (``first_seen``, wall clock,
    kept across watch events and re-lists of the same uid): it was created no later than that, so
    the policy plans its full warm-up from then and errs towards one pod too many for at most one
    warm-up, never towards one too few. It gives no startup sample: creation to Ready is unknown,
    and first sight to Ready would be biased short (a pod found half warm).
    """

    name: str
    uid: str
    created_at: float | None
    phase: PodPhase | None  # None: terminal (Succeeded/Failed), not counted
    ready_at: float | None
    restarts: int
    deletion_cost: str | None
    first_seen: float = 0.0  # wall clock when this watch first saw the pod (this uid)
    cost_owner: str | None = None  # our MARK_OWNER record: the deletion cost this target wrote
    cost_before: str | None = None  # our MARK_BEFORE record: the cost our mark replaced, to put back
    # metadata.resourceVersion of the object this view was read from: the precondition of any patch
    # computed from it (None only for a malformed object, as for created_at: then no precondition).
    resource_version: str | None = None
    # The uid of the controller that owns the pod (its ReplicaSet, for a Deployment's): during a
    # rollout a Deployment's pods belong to several, and a scale-down is split between them.
    owner: str | None = None

    @property
    def our_mark(self) -> bool:
        """Whether the pod's deletion cost is the one this target (or a predecessor) wrote."""
        return self.cost_owner is not None and self.cost_owner == self.deletion_cost

    @property
    def cost_without_us(self) -> str | None:
        """The deletion cost the pod carries once our mark is removed: the one our mark replaced
        while the cost is ours, else the one it has (someone else's, or none)."""
        return self.cost_before if self.our_mark else self.deletion_cost

    @classmethod
    def from_dict(
        cls, obj: Mapping[str, Any], *, previous: WatchedPod | None = None, now: float | None = None
    ) -> WatchedPod:
        """Parse a pod; ``previous`` is the watch's last record of the same name (for ``first_seen``)."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        ready_at = None
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready_at = parse_time(cond.get("lastTransitionTime"))
        phase: PodPhase | None
        if meta.get("deletionTimestamp"):
            phase = PodPhase.DRAINING
        elif status.get("phase") in ("Succeeded", "Failed"):
            phase = None
        elif ready_at is not None:
            phase = PodPhase.READY
        else:
            phase = PodPhase.STARTING
        restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
        annotations = meta.get("annotations") or {}
        uid = str(meta.get("uid"))
        if previous is not None and previous.uid == uid:
            first_seen = previous.first_seen
        else:
            first_seen = time.time() if now is None else now
        return cls(
            name=str(meta.get("name")),
            uid=uid,
            created_at=parse_time(meta.get("creationTimestamp")),
            phase=phase,
            ready_at=ready_at,
            restarts=restarts,
            deletion_cost=annotations.get(DELETION_COST),
            first_seen=first_seen,
            cost_owner=annotations.get(MARK_OWNER),
            cost_before=annotations.get(MARK_BEFORE),
            resource_version=meta.get("resourceVersion") or None,
            owner=_controller_uid(meta),
        )

    @property
    def startup_seconds(self) -> float | None:
        """Creation to Ready, or None when either is unknown (no sample then)."""
        if self.ready_at is None or self.created_at is None:
            return None
        return max(0.0, self.ready_at - self.created_at)

    def view(self) -> PodView:
        """The pod as the policy sees it; unknown creation counts as first seen (see the class)."""
        assert self.phase is not None, "terminal pods are not shown to the policy"
        created = self.created_at if self.created_at is not None else self.first_seen
        return PodView(name=self.name, phase=self.phase, created_at=created, ready_at=self.ready_at)


# --------------------------------------------------------------------------------------------------
# The pod watch


class PodWatch:
    """A list+watch of the pods matching a selector, kept in memory (an informer, minus the frills).

    The thread lists once, then watches from the list's resourceVersion (with bookmarks). A watch
    that ends normally (server timeout) is resumed from the last resourceVersion seen; a 410 Gone
    (history compacted) or a broken stream leads to a fresh list, after a jittered backoff on errors.
    ``on_ready(pod, initial)`` is called (outside the lock) for every pod seen Ready, ``initial`` being
    True for pods already Ready in the very first list.
    """

    def __init__(
        self,
        core: k8s.CoreV1Api,
        namespace: str,
        selector: str,
        *,
        on_ready: Callable[[WatchedPod, bool], None],
        watch_timeout_seconds: tuple[int, int] = WATCH_TIMEOUT_SECONDS,
        backoff: Backoff | None = None,
    ) -> None:
        self._core = core
        self.namespace = namespace
        self.selector = selector
        self._on_ready = on_ready
        self._watch_timeout = watch_timeout_seconds
        self._backoff = backoff or Backoff(attempts=8, base_seconds=0.5, cap_seconds=15.0)
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._pods: dict[str, WatchedPod] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self.last_sync: float | None = None  # monotonic time of the last successful list or event
        self.last_open: float | None = None  # monotonic time the newest watch stream was opened
        self.last_error: str | None = None
        self.failing_since: float | None = None  # monotonic time of the first error of an outage
        self.lists = 0  # how many full lists were made (1 + re-lists): exposed for tests/metrics
        self.watches = 0

    # -- lifecycle --
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"podwatch-{self.namespace}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:  # unblock a read in progress (same trick as kubernetes.watch.Watch.stop)
            try:
                sock = getattr(getattr(resp, "connection", None), "sock", None)
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (it ends only on :meth:`stop`, or on a bug)."""
        return self._thread is not None and self._thread.is_alive()

    def silent_seconds(self) -> float:
        """Seconds since the server last answered: a list, an event, a bookmark or a new stream.

        A healthy watch is reopened at least every ``watch_timeout_seconds`` (upper end), so
        silence much longer than that, with no error recorded, means the thread is stuck.
        """
        heard = max((t for t in (self.last_sync, self.last_open) if t is not None), default=None)
        return 0.0 if heard is None else time.monotonic() - heard

    def pods(self) -> list[WatchedPod]:
        with self._lock:
            return list(self._pods.values())

    def get(self, name: str) -> WatchedPod | None:
        with self._lock:
            return self._pods.get(name)

    # -- the thread --
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rv = self._list()
                failures = 0
                while not self._stop.is_set():
                    rv = self._watch(rv)
            except Exception as exc:
                if self._stop.is_set():
                    break
                gone = status_of(exc) == 410
                if not gone:
                    self.last_error = describe(exc)
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                pause = 0.0 if gone else self._backoff.delay(min(failures, 6), self._rng) + 0.1
                failures = 0 if gone else failures + 1
                log.log(
                    logging.INFO if gone else logging.WARNING,
                    "kubernetes: pod watch %s/%s %s; re-listing in %.1fs",
                    self.namespace,
                    self.selector,
                    "expired (410 Gone)" if gone else f"failed: {describe(exc)}",
                    pause,
                )
                self._stop.wait(pause)

    def _list(self) -> str:
        pods: dict[str, WatchedPod] = {}
        cont: str | None = None
        while True:
            resp: Any = self._core.list_namespaced_pod(
                self.namespace,
                label_selector=self.selector,
                limit=500,
                _continue=cont,
                _preload_content=False,
                _request_timeout=(5, 30),
            )
            body = json.loads(resp.data)
            for obj in body.get("items") or []:
                name = str((obj.get("metadata") or {}).get("name"))
                pod = WatchedPod.from_dict(obj, previous=self.get(name))
                pods[pod.name] = pod
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
                break
        with self._lock:
            old, self._pods = self._pods, pods
        initial = not self._synced.is_set()
        for pod in pods.values():
            if newly_ready(pod, old.get(pod.name)):
                self._on_ready(pod, initial)
        self.lists += 1
        self.last_sync = time.monotonic()
        self.last_error = None
        self.failing_since = None
        self._synced.set()
        return rv

    def _watch(self, rv: str) -> str:
        timeout = self._rng.randint(*self._watch_timeout)
        resp: Any = self._core.list_namespaced_pod(
            self.namespace,
            label_selector=self.selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=rv,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(5, timeout + WATCH_READ_SLACK_SECONDS),
        )
        self._resp = resp
        self.watches += 1
        self.last_open = time.monotonic()
        self.last_error = None
        self.failing_since = None
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 500)
                    raise ApiException(status=code, reason=f"{obj.get('reason')}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                self.last_sync = time.monotonic()
                if kind == "BOOKMARK":
                    continue
                prev = self.get(str((obj.get("metadata") or {}).get("name")))
                pod = WatchedPod.from_dict(obj, previous=prev)
                with self._lock:
                    if kind == "DELETED":
                        self._pods.pop(pod.name, None)
                    else:
                        self._pods[pod.name] = pod
                if kind != "DELETED" and newly_ready(pod, prev):
                    self._on_ready(pod, False)
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()
        return rv
