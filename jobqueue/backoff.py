"""Capped exponential back-off with jitter: the one formula every party that retries uses.

Retrying at a fixed interval brings every client refused together back together; doubling the pause
spreads them out over time, and a random factor spreads them within each step. Two flavours:

- ``"equal"`` jitter, a pause in [d/2, d]: never much shorter than the step, for retries whose next
  try is itself costly or noisy (the API client's resend, a worker reconnecting to Redis, the
  autoscaler's tick after a failure);
- ``"full"`` jitter, a pause in [0, d]: spreads a burst of conflicting writers the widest, for short
  optimistic-concurrency retries against the Kubernetes API.

The step is ``min(cap, base * 2**attempt)``. The exponent stops growing once the step is capped:
``2**1024`` does not fit a float, and a retry loop that counts failures through a long outage
(the autoscaler's tick backs off for as long as Redis or the API server is away) must not die of it.
"""

from __future__ import annotations

import math
import random
from typing import Literal

Jitter = Literal["equal", "full"]


def backoff_step(attempt: int, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)`` for any ``attempt`` >= 0, without overflow."""
    if base <= 0 or cap <= base:
        return min(cap, base)
    # Past this exponent the step is the cap; a larger one would only risk the float overflow.
    enough = math.ceil(math.log2(cap / base)) + 1  # +1: log2 may round down
    return min(cap, base * 2.0 ** min(max(attempt, 0), enough))


def backoff_delay(
    attempt: int, base: float, cap: float, rng: random.Random, *, jitter: Jitter = "equal"
) -> float:
    """The pause before retry ``attempt`` (0 before the first retry), jittered per ``jitter``."""
    step = backoff_step(attempt, base, cap)
    return rng.uniform(step / 2 if jitter == "equal" else 0.0, step)
