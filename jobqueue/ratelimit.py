"""A token bucket per client in Redis, shared by every API replica.

Why a token bucket: it allows a burst up to ``burst`` requests and then a steady ``rate`` per
second, and its state is two numbers per client (no per-request entries as a sliding log needs).
The refill and the take are one Lua call, so concurrent requests of one client on several API
processes cannot both take the last token. The bucket expires once it would be full again, so idle
clients cost nothing.

Client identities are hashed before they become key names: an API key is a secret and must not
show up in ``SCAN`` output or a monitoring tool.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from jobqueue.driver import Eval, Op
from jobqueue.keys import Keyspace
from jobqueue.ops import DEFAULT_SETTINGS
from jobqueue.scripts import Script
from jobqueue.types import Settings

TAKE = Script(
    "ratelimit_take",
    """
-- KEYS: bucket hash.  ARGV: now, rate (tokens/s), burst (capacity), cost, expire (s)
-- Returns {allowed 0|1, seconds until `cost` tokens are available, tokens left} as strings
-- (Lua numbers would be truncated to integers in the reply).
local now, rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, (cost - tokens) / rate
if tokens >= cost then
  tokens = tokens - cost
  allowed, wait = 1, 0
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {allowed, tostring(wait), tostring(tokens)}
""",
)


MAX_REFILL_SECONDS = 86_400
"""Longest time an empty bucket may take to refill (``burst / rate``): one day. The bucket's
expiry is that time, and Redis refuses an EXPIRE beyond ~2**63 ms, which made every submission
fail (a 500) under a limit such as ``1/9999999999999999999s``; a day is far below that and above
any limit that means to let requests through (``1/24h`` is the slowest one-token bucket)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` requests per second on average, bursts of up to ``burst`` requests; an empty bucket
    refills within :data:`MAX_REFILL_SECONDS`."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1 and math.isfinite(self.rate) and math.isfinite(self.burst)):
            raise ValueError("a rate limit needs a finite rate > 0 and burst >= 1")
        refill = self.burst / self.rate
        if refill > MAX_REFILL_SECONDS * (1 + 1e-9):  # "24/24h" is a day, however rounded
            raise ValueError(
                f"the bucket would take {refill:.6g} s to refill (burst / rate); at most "
                f"{MAX_REFILL_SECONDS} s (one day) is allowed: raise the rate or lower the burst"
            )


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float  # seconds until the request would be allowed (0 when allowed)
    remaining: float  # tokens left in the bucket


def bucket_key(client: str, *, settings: Settings = DEFAULT_SETTINGS) -> str:
    """The bucket of one client identity (hashed, see the module docstring)."""
    digest = hashlib.sha256(client.encode()).hexdigest()[:32]
    return Keyspace(settings.prefix).rate_bucket(digest)


def take_token(
    client: str, limit: RateLimit, *, cost: float = 1.0, settings: Settings = DEFAULT_SETTINGS
) -> Op[RateDecision]:
    """Take ``cost`` tokens from ``client``'s bucket if it has them; one round trip."""
    expire = max(1, math.ceil(limit.burst / limit.rate))
    args = (repr(time.time()), repr(limit.rate), repr(limit.burst), repr(cost), expire)
    (reply,) = yield [Eval(TAKE, (bucket_key(client, settings=settings),), args)]
    allowed, wait, left = reply
    return RateDecision(allowed=int(allowed) == 1, retry_after=float(wait), remaining=float(left))
