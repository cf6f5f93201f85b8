"""Leader election with a coordination.k8s.io/v1 Lease, so that of several replicas exactly one acts.

The algorithm is client-go's (``k8s.io/client-go/tools/leaderelection``), with its defaults: lease
duration 15 s, renew deadline 10 s, retry period 2 s.

* Every ``retry_period`` each candidate reads the Lease. A free lease (no holder: never taken or
  released cleanly) is taken at once; a lease held by someone else is taken only once it has expired.
* The holder renews every ``retry_period``; if it cannot renew for ``renew_deadline`` it stops being
  leader on its own, before anyone else may consider the lease expired (see "Timing" below).
* Writes are ``update`` calls carrying the resourceVersion that was read, so when two candidates race
  for an expired lease the API server lets exactly one win (the other gets 409 Conflict).
* ``stop()`` (call it on SIGTERM) gives up leadership first, waits for the round in flight (at most
  :attr:`LeaderElector.round_seconds`; a round that ends after the stop request neither writes nor
  makes this instance leader again), then clears ``holderIdentity`` so a standby takes over at its
  next poll instead of waiting out the lease. The release is this instance's last write.

Expiry is judged the way client-go does, from the candidate's own monotonic clock: a lease is expired
``leaseDurationSeconds`` *as recorded in the Lease by its holder* after this candidate last saw its
record change (when the read answered, not when it was sent: a slow read may carry a renewal newer
than its sending), which needs no clock agreement between nodes. Neither the candidate's own lease
duration nor its own renew deadline enters: replicas may be configured differently (during a
rollout that changes them), and the holder steps down by *its* renew deadline, which the Lease does
not record. So ``renewTime`` (the holder's wall clock) never shortens the wait either.

Timing: the holder dates a renewal from the *start* of its round (``renewed_at``, before the read),
and another replica dates the same record from when its read *answered*, which is later, so no other
replica takes the lease before ``renewed_at + lease_duration``. Each write attempt of the target asks
``is_leader`` right before it and is one request bounded by ``write_timeout`` in all (no retries
underneath: ``autoscaler.targets.base.WRITE_TIMEOUT_SECONDS``). The holder acts (``is_leader``)
only until ``renewed_at + min(renew_deadline, lease_duration - write_timeout)``
(:attr:`LeaderElector.acting_seconds`), so a write started while it acts has landed or been given up
by the client before the lease can expire. The config (``LeaderElectionConfig``) refuses a
margin ``lease_duration - renew_deadline`` (5 s by default) is not longer than the write timeout: the
renew deadline then is what ends leadership, as configured. (A request the client gave up on may
still reach the API server later, from a proxy's or the kernel's buffers: no client can rule that
out; the margin beyond the write timeout is the slack for it.)

RBAC: ``get``, ``create`` and ``update`` on ``leases`` in the lease's namespace, nothing else.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS
from autoscaler.targets.kube_client import (
    describe,
    own_namespace,
    shared_api_client,
    without_retries,
)

log = logging.getLogger(__name__)

STOP_SLACK_SECONDS = 0.5
"""What ``stop()`` waits beyond the worst-case round (:attr:`LeaderElector.round_seconds`): thread
scheduling and the bookkeeping around the two requests, which no client timeout bounds."""


class Leadership(Protocol):
    """What the daemon needs: act only while ``is_leader()``."""

    @property
    def identity(self) -> str: ...

    def is_leader(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class AlwaysLeader:
    """Leader election disabled: this process always acts (one replica, or the local target)."""

    def __init__(self, identity: str | None = None) -> None:
        self._identity = identity or default_identity()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def holder(self) -> str | None:
        return self._identity

    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def default_identity(base: str | None = None) -> str:
    """``<pod name or hostname>_<8 hex>``: unique even when a pod restarts with the same name."""
    name = base or os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{name}_{uuid.uuid4().hex[:8]}"


def _micro_now(at: float) -> datetime:
    """A MicroTime value. The client serialises datetimes with ``isoformat()``, which drops the
    fraction when it is zero, and the API server insists on six digits; so never send zero."""
    stamp = datetime.fromtimestamp(at, UTC)
    return stamp if stamp.microsecond else stamp.replace(microsecond=1)


class LeaderElector:
    """Acquires and renews one Lease in a background thread. See the module docstring."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        *,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        request_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        if not 0 < write_timeout < lease_duration - retry_period:
            # Acting for no longer than a renewal period, the leader would stop between renewals.
            raise ValueError("need 0 < write_timeout < lease_duration - retry_period")
        self._api = k8s.CoordinationV1Api(without_retries(api_client))
        self.namespace = namespace
        self.name = name
        self._identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.write_timeout = write_timeout
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        # Each request must end well within the renew deadline, or a hung call could outlive it.
        # The lease client makes no retries of its own (urllib3 retries up to 3 times by default, each
        # with a fresh timeout), so a round is bounded by two timeouts: see round_seconds.
        self._timeout = request_timeout or max(1.0, min(5.0, renew_deadline / 2))
        self._clock = clock
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._leader = False
        self._renewed_at = -math.inf  # monotonic time of the start of the last successful write
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = -math.inf
        self._observed_duration = lease_duration
        self._holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transitions = 0  # how often this instance became leader

    # -- public interface --
    @property
    def identity(self) -> str:
        return self._identity

    @property
    def holder(self) -> str | None:
        """The holder identity last seen on the Lease (``None``: free or not read yet)."""
        return self._holder

    @property
    def round_seconds(self) -> float:
        """The longest one round can take: a read and a write (or create), one attempt each, each
        bounded by the request timeout (the lease client does not retry)."""
        return 2 * self._timeout

    @property
    def acting_seconds(self) -> float:
        """How long after its last renewal the leader acts: the renew deadline, but never so long that
        a write started then (bounded by ``write_timeout``) could end after the lease expires."""
        return min(self.renew_deadline, self.lease_duration - self.write_timeout)

    def is_leader(self) -> bool:
        """True only while the lease is held *and* was renewed within :attr:`acting_seconds`."""
        with self._lock:
            return self._leader and self._clock() - self._renewed_at < self.acting_seconds

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"leader-{self.name}", daemon=True)
            self._thread.start()
            log.info(
                "leader election: %s competing for lease %s/%s", self._identity, self.namespace, self.name
            )

    def stop(self, release: bool = True) -> None:
        """Stop competing. With ``release`` (the default, for SIGTERM) clear the holder so that a
        standby takes over immediately; without it the lease simply expires (as after a crash).

        Leadership ends first; then the round in flight, if any, is waited for (it cannot take
        longer than :attr:`round_seconds`), and it neither writes after this request nor makes this
        instance leader again. The release comes last, so that no renewal of this instance's can
        follow it; it is tried whether or not this instance believed it led, since a round whose
        answer came after the stop (or never) may still have taken the lease."""
        self._stop.set()
        self._set_leader(False, "stopping")
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.round_seconds + STOP_SLACK_SECONDS)
            if thread.is_alive():
                log.warning("leader election: %s: round still running after stop", self._identity)
        if release:
            self.release()

    # -- one round --
    def try_acquire_or_renew(self) -> bool:
        """Read the lease; take it if free or expired, renew it if ours. Returns leadership."""
        started = self._clock()
        wall = time.time()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(started, wall)
        # Someone else's record is dated from when the read answered, as client-go does: a late
        # answer can carry a renewal made after the read was sent, and dated from the send it
        # would expire early, by up to the read's latency, while its holder still acts.
        seen = self._clock()
        spec = lease.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity or ""
        self._observe(spec, seen)
        if holder and holder != self._identity and self.expires_in(seen) > 0:
            if self._leader:
                self._set_leader(False, f"lease held by {holder}")
            return False
        if self._stop.is_set():  # stop() was called during the read: write nothing more
            return False
        renewing = holder == self._identity and self._leader
        lease.spec = k8s.V1LeaseSpec(
            holder_identity=self._identity,
            lease_duration_seconds=math.ceil(self.lease_duration),
            acquire_time=spec.acquire_time if renewing else _micro_now(wall),
            renew_time=_micro_now(wall),
            lease_transitions=(spec.lease_transitions or 0) + (0 if renewing else 1),
        )
        try:
            lease = self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it first
                return False
            raise
        self._observe(lease.spec, started)
        return self._won(started, previous=holder)

    def release(self) -> bool:
        """Clear ``holderIdentity`` if this instance holds the lease (client-go's ReleaseOnCancel)."""
        wall = time.time()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
            spec = lease.spec or k8s.V1LeaseSpec()
            if spec.holder_identity != self._identity:
                return False
            lease.spec = k8s.V1LeaseSpec(
                holder_identity=None,
                lease_duration_seconds=1,
                acquire_time=_micro_now(wall),
                renew_time=_micro_now(wall),
                lease_transitions=spec.lease_transitions,
            )
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout
            )
        except Exception as exc:  # the lease then expires on its own
            log.warning(
                "leader election: %s could not release %s: %s", self._identity, self.name, describe(exc)
            )
            return False
        log.info("leader election: %s released lease %s/%s", self._identity, self.namespace, self.name)
        return True

    # -- internals --
    def _create(self, started: float, wall: float) -> bool:
        if self._stop.is_set():
            return False
        lease = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=k8s.V1LeaseSpec(
                holder_identity=self._identity,
                lease_duration_seconds=math.ceil(self.lease_duration),
                acquire_time=_micro_now(wall),
                renew_time=_micro_now(wall),
                lease_transitions=0,
            ),
        )
        try:
            created = self._api.create_namespaced_lease(self.namespace, lease, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:  # created by another candidate meanwhile
                return False
            raise
        self._observe(created.spec, started)
        return self._won(started, previous="")

    def _observe(self, spec: Any, now: float) -> None:
        record = (
            spec.holder_identity,
            spec.renew_time,
            spec.acquire_time,
            spec.lease_duration_seconds,
            spec.lease_transitions,
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = now
            # the holder's duration, as recorded by the holder (client-go), not this candidate's
            self._observed_duration = float(spec.lease_duration_seconds or self.lease_duration)
        self._holder = spec.holder_identity or None

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until the observed lease counts as expired for this candidate (<= 0: expired):
        the holder's recorded ``leaseDurationSeconds`` after this candidate saw the record."""
        now = self._clock() if now is None else now
        return self._observed_at + self._observed_duration - now

    def _won(self, started: float, previous: str) -> bool:
        with self._lock:
            if self._stop.is_set():  # the write landed, but stop() ran meanwhile: it releases
                return False
            self._renewed_at = started
        if not self._leader:
            log.info(
                "leader election: %s became leader of %s/%s (previous holder: %s)",
                self._identity,
                self.namespace,
                self.name,
                previous or "none",
            )
            self._set_leader(True, "acquired")
        return self._leader

    def _set_leader(self, value: bool, why: str) -> None:
        with self._lock:
            if value and self._stop.is_set():
                return
            changed = self._leader != value
            self._leader = value
        if not changed:
            return
        if value:
            self.transitions += 1
        else:
            log.info("leader election: %s stopped leading %s (%s)", self._identity, self.name, why)
        callback = self._on_started if value else self._on_stopped
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("leader election: callback failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as exc:
                log.warning("leader election: %s: %s", self._identity, describe(exc))
            if self._leader and self._clock() - self._renewed_at >= self.acting_seconds:
                self._set_leader(False, f"could not renew within {self.acting_seconds:g}s")
            if self._leader:
                pause = self.retry_period
            else:
                pause = self.retry_period * self._rng.uniform(1.0, 1.2)
                if self._holder and self._holder != self._identity:
                    # wake up right when the holder's lease runs out rather than up to a period later
                    pause = max(0.05, min(pause, self.expires_in() + 0.05))
            self._stop.wait(pause)


class LeaderElectionSpec(Protocol):
    """The fields of ``autoscaler.config.LeaderElectionConfig`` this module reads."""

    @property
    def enabled(self) -> bool: ...

    @property
    def lease_name(self) -> str: ...

    @property
    def lease_namespace(self) -> str | None: ...

    @property
    def identity(self) -> str | None: ...

    @property
    def lease_duration_seconds(self) -> float: ...

    @property
    def renew_deadline_seconds(self) -> float: ...

    @property
    def retry_period_seconds(self) -> float: ...


def leader_election_from_config(
    spec: LeaderElectionSpec,
    *,
    api_client: k8s.ApiClient | None = None,
    kubeconfig: str | None = None,
    on_started_leading: Callable[[], None] | None = None,
    on_stopped_leading: Callable[[], None] | None = None,
) -> LeaderElector | AlwaysLeader:
    """``AlwaysLeader`` when disabled, else a (not yet started) ``LeaderElector`` for the lease.

    The identity is ``<configured identity or pod name>_<8 hex>``: the configured value lives in
    the ConfigMap every replica reads, so taken verbatim it named them all alike, and each saw the
    lease as its own and acted. The namespace is the configured one, else this pod's own.
    """
    if not spec.enabled:
        return AlwaysLeader(spec.identity)
    return LeaderElector(
        api_client or shared_api_client(kubeconfig),
        spec.lease_namespace or own_namespace(),
        spec.lease_name,
        identity=default_identity(spec.identity),
        lease_duration=spec.lease_duration_seconds,
        renew_deadline=spec.renew_deadline_seconds,
        retry_period=spec.retry_period_seconds,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
    )
