"""Leader election on the real Lease API, as the autoscaler's ServiceAccount: one leader among
candidates; a killed leader (no release) is replaced within the lease duration; a clean release
hands over at the standby's next poll."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from autoscaler.leader import LeaderElector
from tests.e2e.kube import LEASE, REPO, ApiProxy, Install, wait_for

pytestmark = pytest.mark.e2e

DURATION, RENEW, RETRY = 3.0, 2.0, 0.5  # short for the test; the defaults are 15 / 10 / 2

CANDIDATE = """
import sys, time
from autoscaler.leader import LeaderElector
from autoscaler.targets.kube_client import load_api_client
kubeconfig, namespace, identity = sys.argv[1:4]
elector = LeaderElector(load_api_client(kubeconfig), namespace, "startup-autoscaler", identity=identity,
                        lease_duration=3, renew_deadline=2, retry_period=0.5)
elector.start()
while True:
    time.sleep(1)
"""


def elector(installed: Install, identity: str) -> LeaderElector:
    return LeaderElector(
        installed.sa,
        installed.namespace,
        LEASE,
        identity=identity,
        lease_duration=DURATION,
        renew_deadline=RENEW,
        retry_period=RETRY,
    )


def holder(installed: Install) -> str | None:
    lease: Any = k8s.CoordinationV1Api(installed.admin).read_namespaced_lease(LEASE, installed.namespace)
    return lease.spec.holder_identity or None


def test_exactly_one_leader(installed: Install, lease_reset: None) -> None:
    candidates = [elector(installed, f"candidate-{i}") for i in range(3)]
    for c in candidates:
        c.start()
    try:
        wait_for("a leader", lambda: any(c.is_leader() for c in candidates), 10, interval=0.05)
        deadline = time.monotonic() + 2 * DURATION  # several renewals and standby polls
        while time.monotonic() < deadline:
            leaders = [c.identity for c in candidates if c.is_leader()]
            assert len(leaders) == 1, leaders
            time.sleep(0.05)
        assert holder(installed) == leaders[0]
    finally:
        for c in candidates:
            c.stop()


def test_killed_leader_is_replaced_within_the_lease_duration(installed: Install, lease_reset: None) -> None:
    """The leader is a separate process, SIGKILLed: it cannot release anything."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CANDIDATE, str(installed.sa_kubeconfig()), installed.namespace, "doomed"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    standby = elector(installed, "standby")
    try:
        wait_for("the subprocess to lead", lambda: holder_or_none(installed) == "doomed", 30, interval=0.1)
        standby.start()
        time.sleep(2 * RETRY + 0.2)  # the standby has seen the lease being renewed
        assert not standby.is_leader()
        proc.kill()
        killed = time.monotonic()
        proc.wait(5)
        wait_for("the standby to lead", standby.is_leader, DURATION + 2, interval=0.02)
        took = time.monotonic() - killed
        # Not before the lease could have expired, and within one lease duration of the standby
        # seeing the last renewal (its poll: up to 1.2 retry periods after the kill), plus the
        # polling granularity of this test. No earlier takeover on wall-clock evidence: the
        # holder's renew deadline is not in the Lease.
        assert RENEW - RETRY <= took <= DURATION + 1.2 * RETRY + 0.25, took
        assert holder(installed) == "standby"
    finally:
        standby.stop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def holder_or_none(installed: Install) -> str | None:
    try:
        return holder(installed)
    except Exception:
        return None


def test_clean_release_hands_over_at_once(installed: Install, lease_reset: None) -> None:
    first, second = elector(installed, "first"), elector(installed, "second")
    first.start()
    wait_for("the first to lead", first.is_leader, 10, interval=0.02)
    second.start()
    try:
        time.sleep(2 * RETRY)
        assert not second.is_leader()
        first.stop()  # what SIGTERM does: stop acting, then clear holderIdentity
        assert not first.is_leader()
        released = time.monotonic()
        wait_for("the second to lead", second.is_leader, DURATION, interval=0.02)
        took = time.monotonic() - released
        assert took <= RETRY * 1.2 + 0.3, took  # the next poll, not the lease duration
        lease: Any = k8s.CoordinationV1Api(installed.admin).read_namespaced_lease(LEASE, installed.namespace)
        assert lease.spec.holder_identity == "second"
        assert lease.spec.lease_transitions == 1  # created by "first" (0), taken over once
    finally:
        second.stop()
    assert holder(installed) is None  # released on stop as well


def test_a_slow_read_of_the_lease_does_not_let_a_candidate_take_over_early(
    installed: Install, lease_reset: None
) -> None:
    """Expiry is counted from when the candidate *saw* the holder's record, i.e. when the read
    answered, as client-go does: a read the server answers late can carry a renewal made after
    the read was sent. Counted from the send, the candidate took the lease while the holder, which
    had not renewed since (its API calls failing), still acted within its renew deadline."""
    duration, renew, retry = 6.0, 4.0, 1.0
    holder_ = LeaderElector(
        installed.sa,
        installed.namespace,
        LEASE,
        identity="holder",
        lease_duration=duration,
        renew_deadline=renew,
        retry_period=retry,
    )
    proxy = ApiProxy(installed.sa)
    candidate = LeaderElector(
        proxy.client(installed.sa_token),
        installed.namespace,
        LEASE,
        identity="candidate",
        lease_duration=duration,
        renew_deadline=renew,
        retry_period=retry,
        request_timeout=5.0,
    )
    try:
        assert holder_.try_acquire_or_renew()
        read = f"GET /apis/coordination.k8s.io/v1/namespaces/{installed.namespace}/leases/{LEASE}"
        proxy.hold_request(read.encode(), 3.5)  # the API server gets the candidate's read 3.5 s late
        first: list[bool] = []
        reading = threading.Thread(target=lambda: first.append(candidate.try_acquire_or_renew()))
        sent = time.monotonic()
        reading.start()
        time.sleep(2.8)
        assert holder_.try_acquire_or_renew()  # the holder's last renewal: its API calls fail after it
        reading.join(10)
        assert proxy.held.is_set() and first == [False]
        # The holder acts until 4 s after that renewal began (~6.8 s after the read was sent); the
        # lease is the candidate's no sooner than 6 s after it saw that record (~9.5 s).
        took = None
        while time.monotonic() - sent < 12:
            if candidate.try_acquire_or_renew():
                took = time.monotonic() - sent
                assert not holder_.is_leader(), f"two leaders {took:.1f} s after the read was sent"
                break
            time.sleep(0.05)
        assert took is not None, "the candidate never took the expired lease"
    finally:
        proxy.close()
        candidate.stop(release=False)
        holder_.stop(release=False)
