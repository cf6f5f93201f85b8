"""Turns an operation constructor into a function of a client, for each flavour.

``bind_sync(ops.get_job)`` is ``get_job(redis, job_id, ...)`` returning the result;
``bind_async(ops.get_job)`` is the same signature returning an awaitable. The parameters, docstring
and types are the operation's own, so the two flavours cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
import redis.asyncio

from jobqueue.driver import Op, arun, run

P = ParamSpec("P")
T = TypeVar("T")


def bind_sync(make: Callable[P, Op[T]]) -> Callable[Concatenate[redis.Redis, P], T]:
    @functools.wraps(make)
    def bound(client: redis.Redis, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(client, make(*args, **kwargs))

    return bound


def bind_async(
    make: Callable[P, Op[T]],
) -> Callable[Concatenate[redis.asyncio.Redis, P], Coroutine[Any, Any, T]]:
    @functools.wraps(make)
    async def bound(client: redis.asyncio.Redis, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await arun(client, make(*args, **kwargs))

    return bound
