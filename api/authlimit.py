"""A limit on failed authentications per client address, kept in this process.

With ``API_KEYS`` set, a request with a missing or unknown ``X-API-Key`` is answered 401 before its
body is read (:class:`api.deps.KeyFirstRoute`), but the rate limit (:mod:`jobqueue.ratelimit`) is
keyed by the authenticated caller and never sees such requests: a client could send them without
end, and a misconfigured one (a revoked key in a retry loop) was told nothing but "unknown key".
Each address gets a token bucket of failures (``AUTH_FAILURE_LIMIT``, default ``10/m,burst=20``):
every 401 takes a token, and once the bucket is empty the address's failures are answered 429
``too_many_auth_failures`` with ``Retry-After`` (the time until a token is back) instead.

Only failures are counted, and only they are refused: a request whose key is valid never takes a
token and is served whatever its address's bucket holds. So a client with a valid key is never
slowed or locked out by another client behind the same address (a NAT, or a proxy that is not in
``FORWARDED_ALLOW_IPS``, which makes every client one address). The price of that choice: this
limit does not stop key guessing, since a right guess is still served; keys must be long and
random for that (see docs/api.md).

Why in the process and not in Redis like the rate limit: a refusal must stay cheaper than the work
it refuses, and a round trip per bad request would hand an unauthenticated client a share of
Redis. With several replicas each keeps its own buckets, so an address may get up to that many
times the limit.

Memory is bounded: at most :data:`MAX_ADDRESSES` buckets, kept in the order they last took a
failure. A bucket that has refilled carries no information and is dropped as soon as it is the
oldest; when the table is full of live buckets (a flood from many addresses), the one that failed
least recently is dropped to make room (``api_auth_failure_evictions_total``), so a flood can cost
that much memory and no more. An IPv6 client is counted by its /64 network: one host usually holds
a whole /64 and could otherwise take a fresh address, hence a fresh bucket, for every request.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from api.auth import API_KEY_HEADER, AuthenticationError
from api.errors import error_response
from api.metrics import ApiMetrics
from jobqueue.ratelimit import RateLimit

MAX_ADDRESSES = 10_000
"""Buckets kept at most: ~2.3 MB (about 230 bytes each, measured: the address, its two floats, the
table's entry). Past it, the bucket that failed least recently is forgotten (see the module
docstring)."""

MAX_ADDRESS_CHARS = 64
"""The longest address kept as is. With ``FORWARDED_ALLOW_IPS=*`` the address is whatever the
client wrote in ``X-Forwarded-For``: longer strings are cut (and so share a bucket), not stored."""


def bucket_key(address: str) -> str:
    """The bucket an address counts in: an IPv4 address as is, an IPv6 address by its /64
    network (an IPv4-mapped one as the IPv4 address it is), anything else (a name a trusted proxy
    sent) cut to :data:`MAX_ADDRESS_CHARS` characters."""
    if ":" not in address:
        return address[:MAX_ADDRESS_CHARS]
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address[:MAX_ADDRESS_CHARS]
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    # The network's four groups, written out: str(IPv6Network(...)) cost 20 µs, four times the parse.
    n = int(ip) >> 64
    return f"{n >> 48:x}:{n >> 32 & 0xFFFF:x}:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}::/64"


class AuthFailureLimiter:
    """Token buckets of failed authentications per address (see the module docstring)."""

    def __init__(
        self,
        limit: RateLimit,
        metrics: ApiMetrics,
        capacity: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.metrics = metrics
        self.capacity = max(1, capacity)
        self.clock = clock
        self._refill_seconds = limit.burst / limit.rate
        # address -> [tokens, time of the last update]; ordered by that time, the oldest first
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def failed(self, address: str) -> float | None:
        """Count one failed authentication from ``address``: None while its bucket had a token
        (answer the 401), else the seconds until it has one again (answer 429)."""
        now = self.clock()
        key = bucket_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._forget(now)
            bucket = self._buckets[key] = [self.limit.burst, now]
        else:
            self._buckets.move_to_end(key)
        tokens = min(self.limit.burst, bucket[0] + (now - bucket[1]) * self.limit.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            wait = None
        else:
            bucket[0] = tokens  # a refusal takes nothing: honouring Retry-After gets the next answer
            wait = (1 - tokens) / self.limit.rate
        self.metrics.auth_failure_addresses.set(len(self._buckets))
        return wait

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled (they mean nothing now), then, if the table is still
        full, the one that failed least recently. Both are at the front: the table is in the order
        of the last update, and a bucket refills ``burst / rate`` seconds after it."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._refill_seconds:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.capacity:
            buckets.popitem(last=False)
            self.metrics.auth_failure_evictions.inc()


def client_address(request: Request) -> str:
    """The client's address as the server saw it: the socket peer, or the address a trusted proxy
    named in ``X-Forwarded-For`` (uvicorn's proxy headers, ``FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client else "unknown"


def install(app: FastAPI, limiter: AuthFailureLimiter | None, metrics: ApiMetrics) -> None:
    """Answer every failed authentication (:class:`AuthenticationError`, wherever it is raised):
    its 401, or the 429 once its address is over the limit (``limiter`` None: always the 401).
    Neither reads the request's body."""

    @app.exception_handler(AuthenticationError)
    async def _failed(request: Request, exc: AuthenticationError) -> Response:
        address = client_address(request)
        wait = limiter.failed(address) if limiter is not None else None
        if wait is None:
            metrics.rejections.labels("unauthorized").inc()
            return error_response(exc.status, exc.error, exc.detail, headers=exc.headers)
        metrics.rejections.labels("auth_rate_limited").inc()
        seconds = max(1, math.ceil(wait))  # what Retry-After says
        detail = (
            f"{exc.detail}; too many requests from {address} failed to authenticate: retry after "
            f"{seconds} s, with a valid {API_KEY_HEADER}"
        )
        return error_response(429, "too_many_auth_failures", detail, seconds)
