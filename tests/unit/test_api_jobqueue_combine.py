"""``jobqueue.combine.concurrently``: independent operations share round trips (pure, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue.combine import concurrently
from jobqueue.driver import Op, Sleep, call


def two_trips(name: str) -> Op[str]:
    (a,) = yield [call("GET", f"{name}:1")]
    b, c = yield [call("GET", f"{name}:2"), call("GET", f"{name}:3")]
    return f"{name}={a}{b}{c}"


def one_trip(name: str) -> Op[str]:
    (a,) = yield [call("GET", name)]
    return f"{name}={a}"


def no_trip() -> Op[str]:
    yield from ()  # a generator that needs no round trip
    return "free"


def test_batches_are_merged_round_trip_by_round_trip() -> None:
    op = concurrently(two_trips("x"), one_trip("y"), no_trip())
    first = next(op)
    assert isinstance(first, list) and [c.args[1] for c in first] == ["x:1", "y"]
    second = op.send(["a", "Y"])
    assert isinstance(second, list) and [c.args[1] for c in second] == ["x:2", "x:3"]
    with pytest.raises(StopIteration) as done:
        op.send(["b", "c"])
    assert done.value.value == ("x=abc", "y=Y", "free")


def test_nothing_to_run_is_no_round_trip() -> None:
    with pytest.raises(StopIteration) as done:
        next(concurrently())
    assert done.value.value == ()


def test_sleeping_operations_are_refused() -> None:
    def sleeper() -> Op[None]:
        yield Sleep(1)

    op: Any = concurrently(one_trip("y"), sleeper())
    with pytest.raises(ValueError, match="sleeps"):
        next(op)
