"""A leader's writes end before its lease can expire (real API server, real Lease, the autoscaler's
ServiceAccount).

No other replica takes the lease before ``lease_duration`` after the holder's renewal began. The
target asks the leader's gate right before each write attempt, so an attempt started while the gate
is open must end by then: the gate closes ``lease_duration - write timeout`` after the renewal (or at
the renew deadline, if earlier), and one attempt takes no longer than the write timeout, whatever
the API server does (here: holds the request back).
"""

from __future__ import annotations

import time

import pytest

from autoscaler.engine.snapshot import Decision
from autoscaler.leader import LeaderElector
from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS, LeadershipLostError
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import LEASE, ApiProxy, Install

pytestmark = pytest.mark.e2e


class Offset:
    """The monotonic clock, pushed forward on demand: a leader whose renewals stopped long ago."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


def test_a_write_is_refused_once_the_leaders_gate_closes(installed: Install, lease_reset: None) -> None:
    """Lease 15 s, renew deadline 14 s: the margin (1 s) is shorter than one write attempt may take,
    so the gate closes at 15 s - write timeout, before the renew deadline. 13.5 s after its last
    renewal the leader used to write (13.5 < 14); the write could land after 15 s, when a standby
    may already lead."""
    clock = Offset()
    leader = LeaderElector(
        installed.sa,
        installed.namespace,
        LEASE,
        identity="leader",
        lease_duration=15,
        renew_deadline=14,
        retry_period=2,
        clock=clock,
    )
    target = KubernetesTarget(installed.sa, installed.namespace, "worker")
    try:
        assert leader.try_acquire_or_renew()  # the renewal: nothing renews it after this
        state = target.observe()
        before = state.replicas
        clock.ahead = 15 - WRITE_TIMEOUT_SECONDS - 0.5  # open: a write started now lands in time
        assert target.scale(Decision(before + 1, "gate-open"), state, leader.is_leader) == before + 1
        assert installed.worker_replicas() == before + 1

        state = target.observe()
        clock.ahead = 15 - WRITE_TIMEOUT_SECONDS + 0.5  # 13.5 s: within the renew deadline of 14 s
        with pytest.raises(LeadershipLostError):
            target.scale(Decision(before + 2, "gate-closed"), state, leader.is_leader)
        assert target.last_outcome is not None and target.last_outcome.action == "abandoned"
        assert installed.worker_replicas() == before + 1
    finally:
        target.close()
        leader.stop(release=False)


def test_a_write_attempt_the_server_holds_is_given_up_after_the_write_timeout(installed: Install) -> None:
    """The API server takes 6 s to get to the scale patch. The attempt is given up after the write
    timeout (not the 15 s read timeout of the other calls), and the retry asks the gate again: the
    gate, open for the first attempt only, refuses it."""
    proxy = ApiProxy(installed.sa)
    target = proxy.worker_target(installed)
    try:
        state = target.observe()
        before = state.replicas
        proxy.hold_request(installed.worker_scale_patch, 6.0)
        answers = [True]  # the gate is open for exactly one attempt
        started = time.monotonic()
        with pytest.raises(LeadershipLostError):
            target.scale(Decision(before + 1, "held"), state, lambda: bool(answers and answers.pop()))
        took = time.monotonic() - started
        assert took < WRITE_TIMEOUT_SECONDS + 1.0, f"one write attempt took {took:.1f}s"
        # The held request still reaches the server once the proxy lets it go: a client cannot take
        # back what it sent. The margin beyond the write timeout is the slack for that.
        assert proxy.held.wait(10)
    finally:
        target.close()
        proxy.close()
