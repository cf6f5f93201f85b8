"""Queueing arithmetic: how many job slots hold a waiting-time SLO at a given load.

The model is M/M/c (Erlang C). Real inference jobs have far less variable service times than the
exponential, so Erlang C over-states waiting a little; that bias is on the safe side, and the
policy's ``confidence`` knob is tuned against replays with real service-time behaviour.
"""

from __future__ import annotations

import math


def _erlang_c_from_b(servers: int, load: float, blocking: float) -> float:
    """Erlang C from Erlang B for the same size (``servers > load``)."""
    return blocking / (1.0 - (load / servers) * (1.0 - blocking))


def _tail(p_wait: float, servers: int, load: float, wait: float, *, service_time: float, cv2: float) -> float:
    """P(wait > ``wait``) given P(wait > 0).

    M/M/c's tail ``exp(-(c - a) * wait / S)`` with the heavy-traffic (Kingman / Allen-Cunneen)
    correction for M/G/c: it decays 2 / (1 + cv^2) times as fast, so near-constant model latencies
    need fewer slots than exponential ones.
    """
    decay = 2.0 / (1.0 + max(cv2, 0.0))
    return p_wait * math.exp(-(servers - load) * max(wait, 0.0) * decay / service_time)


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arriving job has to wait, for ``servers`` slots at ``offered_load`` Erlangs.

    Uses the numerically stable Erlang-B recursion; returns 1.0 when the system is unstable
    (``offered_load >= servers``), which is what "waits for sure" means for sizing.
    """
    if offered_load <= 0:
        return 0.0
    if servers <= offered_load:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return _erlang_c_from_b(servers, offered_load, blocking)


def wait_exceedance(
    servers: int, arrival_rate: float, service_time: float, wait: float, service_cv2: float = 1.0
) -> float:
    """P(queueing delay > ``wait``) with ``servers`` slots (M/M/c when ``service_cv2`` is 1)."""
    load = arrival_rate * service_time
    p_wait = erlang_c(servers, load)
    if p_wait >= 1.0:
        return 1.0
    return _tail(p_wait, servers, load, wait, service_time=service_time, cv2=service_cv2)


def slots_for_wait_slo(
    arrival_rate: float,
    service_time: float,
    max_wait: float,
    miss_probability: float,
    service_cv2: float = 1.0,
    *,
    limit: int | None = None,
) -> int:
    """Smallest number of job slots for which :func:`wait_exceedance` <= ``miss_probability``.

    Walks the Erlang-B recursion upward from one slot, testing each stable size as it goes, so
    the whole search costs O(answer) arithmetic steps, not O(answer) Erlang evaluations. With
    ``limit`` it stops there and answers ``limit`` for any larger need: the answer is a pool
    size, and a rate read off a corrupt counter (10⁹ jobs/s) must not cost minutes to size for
    a pool the maximum clips anyway. A non-finite rate is refused: it would never end.
    """
    if not math.isfinite(arrival_rate):
        raise ValueError(f"arrival_rate must be finite, got {arrival_rate!r}")
    if arrival_rate <= 0:
        return 0
    load = arrival_rate * service_time
    if limit is not None and load >= limit:
        # Every size up to the limit is unstable (servers <= load), so the walk below would step
        # through all of them to answer the limit: answered at once, the same number.
        return limit
    blocking = 1.0
    servers = 0
    while True:
        if limit is not None and servers >= limit:
            return limit
        servers += 1
        blocking = load * blocking / (servers + load * blocking)
        if servers <= load:
            continue
        p_wait = _erlang_c_from_b(servers, load, blocking)
        miss = _tail(p_wait, servers, load, max_wait, service_time=service_time, cv2=service_cv2)
        if miss <= miss_probability:
            return servers
