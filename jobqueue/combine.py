"""Run several protocol operations side by side, sharing round trips.

An operation is a generator of batches (see :mod:`jobqueue.driver`), so independent operations can
be interleaved: each round trip carries the next batch of every operation still running, and the
replies are handed back to each in order. Two one-round-trip operations then cost one round trip
instead of two, which is what a request that checks a rate limit and a cache, or writes a job and
a cache entry, wants on its hot path. Operations that sleep (polling) cannot be combined.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from jobqueue.driver import Command, Op, Sleep

A = TypeVar("A")
B = TypeVar("B")


@overload
def concurrently(first: Op[A], second: Op[B], /) -> Op[tuple[A, B]]: ...
@overload
def concurrently(*ops: Op[Any]) -> Op[tuple[Any, ...]]: ...


def concurrently(*ops: Op[Any]) -> Op[tuple[Any, ...]]:
    """The results of ``ops``, in order, run with their batches merged round trip by round trip."""
    results: list[Any] = [None] * len(ops)
    pending: dict[int, list[Command]] = {}

    def advance(i: int, reply: Any) -> None:
        try:
            step = ops[i].send(reply)
        except StopIteration as done:
            results[i] = done.value
            return
        if isinstance(step, Sleep):
            raise ValueError("an operation that sleeps cannot run concurrently with others")
        pending[i] = step

    for i in range(len(ops)):
        advance(i, None)
    while pending:
        current = list(pending.items())
        pending.clear()
        replies = yield [cmd for _, batch in current for cmd in batch]
        pos = 0
        for i, batch in current:
            advance(i, replies[pos : pos + len(batch)])
            pos += len(batch)
    return tuple(results)
