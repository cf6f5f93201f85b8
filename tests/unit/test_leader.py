"""Leader election timing, against an in-memory Lease API (no cluster) and an injected clock:
expiry judged by the holder's recorded lease duration, a stop() that waits for the round in flight
and releases last, and the acting window that leaves room for a write to land."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from autoscaler.config import LeaderElectionConfig
from autoscaler.leader import LeaderElector, leader_election_from_config
from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemoryLeases:
    """One Lease with resourceVersion checks, like the API server; each call can be slowed down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.lease: Any = None
        self.version = 0
        self.delay = delay
        self.writes: list[tuple[float, str | None]] = []  # (when it landed, holder written)

    def _copy(self) -> k8s.V1Lease:
        assert self.lease is not None
        spec: Any = self.lease.spec
        return k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name="l", namespace="ns", resource_version=str(self.version)),
            spec=k8s.V1LeaseSpec(**{k: getattr(spec, k) for k in spec.attribute_map}),
        )

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> k8s.V1Lease:
        time.sleep(self.delay)
        if self.lease is None:
            raise ApiException(status=404)
        return self._copy()

    def create_namespaced_lease(self, namespace: str, body: k8s.V1Lease, **_: Any) -> k8s.V1Lease:
        time.sleep(self.delay)
        if self.lease is not None:
            raise ApiException(status=409)
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> k8s.V1Lease:
        time.sleep(self.delay)
        if body.metadata.resource_version != str(self.version):
            raise ApiException(status=409)
        return self._store(body)

    def _store(self, body: Any) -> k8s.V1Lease:
        self.lease, self.version = body, self.version + 1
        self.writes.append((time.monotonic(), body.spec.holder_identity))
        return self._copy()

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease.spec.holder_identity


def make(leases: MemoryLeases, identity: str, clock: Clock | None = None, **timing: Any) -> LeaderElector:
    elector = LeaderElector(
        k8s.ApiClient(k8s.Configuration()),
        "ns",
        "l",
        identity=identity,
        clock=clock or time.monotonic,
        **timing,
    )
    elector._api = leases  # type: ignore[assignment]
    return elector


def held_by(holder: str, duration: int, renewed: float) -> k8s.V1LeaseSpec:
    stamp = datetime.fromtimestamp(renewed, UTC)
    return k8s.V1LeaseSpec(
        holder_identity=holder,
        lease_duration_seconds=duration,
        acquire_time=stamp,
        renew_time=stamp,
        lease_transitions=0,
    )


def test_expiry_uses_the_holders_recorded_duration_not_the_candidates() -> None:
    clock = Clock()
    candidate = make(MemoryLeases(), "candidate", clock, lease_duration=15, renew_deadline=10, retry_period=2)
    candidate._observe(held_by("holder", 30, time.time()), clock.now)
    assert candidate.expires_in(clock.now + 20) == pytest.approx(10)
    assert candidate.expires_in(clock.now + 30) <= 0


def test_an_old_renew_time_does_not_shorten_the_wait_the_holder_may_still_act(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The holder (lease 15 s, renew deadline 14 s) acts until 14 s after its renewal began; its
    renewTime, by its own wall clock, reads 3 s old to the candidate (clock skew, or a slow round).
    The candidate (renew deadline 10 s, retry 2 s) used to take over 2 s early on that wall-clock
    evidence, a margin computed from *its own* timing: 13 s after seeing the renewal, while the
    holder still led. Only the holder's recorded duration, counted locally, is safe."""
    clock = Clock()
    wall0 = time.time()
    monkeypatch.setattr(time, "time", lambda: wall0 + clock.now - 1000.0)  # both clocks advance alike
    leases = MemoryLeases()
    candidate = make(leases, "candidate", clock, lease_duration=15, renew_deadline=10, retry_period=2)
    holder_renewed = clock.now  # the holder's round began just before the candidate's read answered
    leases.lease = k8s.V1Lease(spec=held_by("holder", 15, wall0 - 3))
    assert not candidate.try_acquire_or_renew()  # sees the record now
    clock.now = holder_renewed + 13.5  # the holder still acts: 13.5 < its renew deadline 14
    assert candidate.expires_in() > 0
    assert not candidate.try_acquire_or_renew()
    assert leases.holder == "holder"
    clock.now = holder_renewed + 15.01
    assert candidate.try_acquire_or_renew()
    assert leases.holder == "candidate"


def test_stop_waits_for_the_round_in_flight_and_releases_last() -> None:
    """Each request takes nearly its timeout (0.4 s): a round is ~0.8 s, and stop() used to wait
    only timeout + retry period (0.6 s). The round then acquired the lease after stop() returned:
    leader again, the lease held, nothing released."""
    leases = MemoryLeases(delay=0.38)
    started: list[float] = []
    elector = make(
        leases,
        "me",
        lease_duration=3,
        renew_deadline=2,
        retry_period=0.2,
        request_timeout=0.4,
        on_started_leading=lambda: started.append(time.monotonic()),
    )
    assert elector.round_seconds == pytest.approx(0.8)
    elector.start()
    time.sleep(0.05)  # the first round is reading (404: it will create the lease)
    elector.stop()
    stopped = time.monotonic()
    assert not elector.is_leader()
    time.sleep(1.0)  # anything still in flight has landed by now
    assert not elector.is_leader()
    assert not started or started[-1] < stopped
    assert leases.holder is None  # never taken, or released
    assert all(at < stopped for at, _ in leases.writes)  # the release is the last write


def test_a_round_that_ends_after_stop_does_not_make_a_leader_again() -> None:
    leases = MemoryLeases(delay=0.3)
    elector = make(leases, "me", lease_duration=3, renew_deadline=2, retry_period=0.2, request_timeout=1)
    gate = threading.Event()

    def round_() -> None:
        gate.set()
        elector.try_acquire_or_renew()

    worker = threading.Thread(target=round_)
    worker.start()
    gate.wait()
    time.sleep(0.4)  # the read is done, the write (create) is in flight
    elector._stop.set()
    worker.join()
    assert leases.holder == "me"  # the write did land...
    assert not elector.is_leader()  # ...but it does not make a leader after stop was requested
    elector.stop()
    assert leases.holder is None  # and stop releases what that round took


def test_a_round_is_bounded_by_two_request_timeouts() -> None:
    clock = Clock()
    elector = make(MemoryLeases(), "me", clock)
    assert elector.round_seconds == 10  # two requests, 5 s each, no client-side retries


def test_the_lease_client_makes_no_retries_of_its_own() -> None:
    api = k8s.ApiClient(k8s.Configuration())
    elector = LeaderElector(api, "ns", "l", identity="me")
    pool = elector._api.api_client.rest_client.pool_manager
    assert pool.connection_pool_kw["retries"].total == 0
    assert api.configuration.retries is None  # the caller's client is left alone


def test_the_leader_stops_acting_a_write_timeout_before_the_lease_can_expire() -> None:
    """A write attempt started while ``is_leader()`` says yes takes up to the write timeout; it
    must end before another replica may take the lease (``lease_duration`` after the renewal began
    at the earliest). With a renew deadline of 14 s in a 15 s lease the leader used to act until
    14 s: a write started at 13.9 s could land at 15.9 s, after a standby took over at 15 s."""
    clock = Clock()
    leader = make(MemoryLeases(), "me", clock, lease_duration=15, renew_deadline=14, retry_period=2)
    renewed = clock.now
    assert leader.try_acquire_or_renew()
    assert leader.acting_seconds == pytest.approx(15 - WRITE_TIMEOUT_SECONDS)
    clock.now = renewed + 15 - WRITE_TIMEOUT_SECONDS - 0.01
    assert leader.is_leader()  # a write started now ends by renewed + 14.99 s at the latest
    clock.now = renewed + 15 - WRITE_TIMEOUT_SECONDS
    assert not leader.is_leader()
    clock.now = renewed + 13.9
    assert not leader.is_leader()  # within the renew deadline, but too late to start a write

    # The default timing (15 / 10 s) leaves more than a write timeout: the renew deadline governs.
    default = make(MemoryLeases(), "me", clock, lease_duration=15, renew_deadline=10, retry_period=2)
    renewed = clock.now
    assert default.try_acquire_or_renew() and default.acting_seconds == 10
    clock.now = renewed + 9.99
    assert default.is_leader()
    clock.now = renewed + 10
    assert not default.is_leader()


@pytest.mark.parametrize(("duration", "renew"), [(12.0, 10.0), (15.0, 15.0 - WRITE_TIMEOUT_SECONDS)])
def test_a_lease_margin_not_longer_than_the_write_timeout_is_a_config_error(
    duration: float, renew: float
) -> None:
    fields = {"lease_duration_seconds": duration, "renew_deadline_seconds": renew, "retry_period_seconds": 1}
    with pytest.raises(
        ValidationError, match=r"lease_duration_seconds - renew_deadline_seconds .* write timeout"
    ):
        LeaderElectionConfig(enabled=True, **fields)
    LeaderElectionConfig(enabled=False, **fields)  # not leading by lease: nothing to fit
    ok = LeaderElectionConfig(enabled=True, lease_duration_seconds=duration + 1, renew_deadline_seconds=renew)
    api = k8s.ApiClient(k8s.Configuration())
    assert isinstance(leader_election_from_config(ok, api_client=api), LeaderElector)
