"""The limit on failed authentications per client address (:mod:`api.authlimit`), on a fake clock:
its buckets, the wait it asks for, and the memory a flood of addresses can take."""

from __future__ import annotations

import pytest

from api.authlimit import MAX_ADDRESS_CHARS, AuthFailureLimiter, bucket_key
from api.metrics import ApiMetrics
from jobqueue.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float = 1.0, burst: float = 3, capacity: int = 100) -> tuple[AuthFailureLimiter, Clock]:
    clock = Clock()
    return AuthFailureLimiter(RateLimit(rate=rate, burst=burst), ApiMetrics(), capacity, clock), clock


def sample(metrics: ApiMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_an_address_gets_its_burst_then_one_failure_per_token_and_is_told_how_long_to_wait() -> None:
    limit, clock = limiter(rate=0.5, burst=3)  # a token every 2 s
    assert [limit.failed("203.0.113.7") for _ in range(3)] == [None, None, None]
    assert limit.failed("203.0.113.7") == pytest.approx(2.0)
    clock.now += 0.5
    assert limit.failed("203.0.113.7") == pytest.approx(1.5)  # a refusal takes no token
    clock.now += 1.5
    assert limit.failed("203.0.113.7") is None  # honouring Retry-After gets the next answer
    assert limit.failed("203.0.113.7") == pytest.approx(2.0)
    assert limit.failed("198.51.100.9") is None  # another address: its own bucket
    clock.now += 3600
    assert [limit.failed("203.0.113.7") for _ in range(3)] == [None, None, None]  # refilled, not more


def test_an_ipv6_client_is_counted_by_its_64_network() -> None:
    """A host usually holds a whole /64: counted by address, it had a fresh bucket per request."""
    assert bucket_key("2001:db8:1:2:aaaa::1") == bucket_key("2001:db8:1:2::ffff") == "2001:db8:1:2::/64"
    assert bucket_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert bucket_key("::ffff:192.0.2.1") == "192.0.2.1"  # IPv4 over an IPv6 socket: the IPv4 address
    assert bucket_key("192.0.2.1") == "192.0.2.1"
    assert bucket_key("x" * 1000) == "x" * MAX_ADDRESS_CHARS  # what a trusted proxy named, cut
    assert bucket_key("not:an:address") == "not:an:address"
    limit, _ = limiter(burst=2)
    assert [limit.failed(f"2001:db8::{i}") for i in range(1, 4)] == [None, None, pytest.approx(1.0)]
    assert limit.failed("2001:db8:0:1::1") is None


def test_a_flood_of_addresses_is_bounded_and_refilled_buckets_go_first() -> None:
    limit, clock = limiter(rate=1.0, burst=3, capacity=100)  # a bucket refills 3 s after its last failure
    metrics = limit.metrics
    for i in range(250):
        limit.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limit) == 100  # never more than the capacity, however many addresses
    assert sample(metrics, "api_auth_failure_evictions_total") == 150
    assert sample(metrics, "api_auth_failure_addresses") == 100
    # The most recent addresses are kept, with their state.
    limit.failed("10.0.0.249")
    limit.failed("10.0.0.249")
    assert limit.failed("10.0.0.249") == pytest.approx(1.0)
    # Once refilled, buckets are dropped without counting as evictions when new addresses come.
    clock.now += 3.0
    limit.failed("192.0.2.1")
    assert len(limit) == 1
    assert sample(metrics, "api_auth_failure_evictions_total") == 150
    assert sample(metrics, "api_auth_failure_addresses") == 1
