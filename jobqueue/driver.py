"""Runs protocol operations against a sync or an asyncio Redis client.

Every operation in :mod:`jobqueue.ops` and :mod:`jobqueue.consumer` is written once, as a generator
that yields *steps* and receives their replies ("sans-I/O"): a step is a batch of commands (sent as
one pipeline, i.e. one round trip) or a :class:`Sleep`. :func:`run` executes an operation with
``redis.Redis``, :func:`arun` with ``redis.asyncio.Redis``. That is the whole difference between the
two flavours; keys, commands, scripts and reply parsing exist once.

Replies are taken raw (the pipeline's response callbacks are switched off) and normalised here
(bytes to str, RESP3 maps kept as dicts), so operations see the same shapes whatever the caller's
``decode_responses`` and ``protocol`` settings are.

An asyncio client may run round trips its own way: :func:`arun` uses its ``execute_wire(commands)``
method when it has one (the API's client, :class:`api.redis_client.ApiRedis`, does), with the
contract of a pipeline's ``execute(raise_on_error=False)`` with response callbacks off: the raw
replies in order, an error reply as its exception, connection errors raised.

Error handling: a command flagged ``allow_error`` receives its ``ResponseError`` as its reply (used
for reads of keys that may not exist yet); any other error reply raises. Connection errors always
raise: retrying is the caller's policy (the worker backs off and retries, the API answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio

from jobqueue.scripts import Script

T = TypeVar("T")
Arg = str | int | float | bytes


@dataclass(frozen=True, slots=True)
class Call:
    """One Redis command."""

    args: tuple[Arg, ...]
    allow_error: bool = False


@dataclass(frozen=True, slots=True)
class Eval:
    """One script invocation (sent as EVALSHA, loaded on NOSCRIPT)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]
    allow_error: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait without holding a connection (polling back-off)."""

    seconds: float


Command = Call | Eval
Step = list[Command] | Sleep
Op = Generator[Step, Any, T]
"""An operation: yields steps, receives a list of replies per batch (None after a Sleep)."""


def call(*args: Arg, allow_error: bool = False) -> Call:
    return Call(args, allow_error)


def decode(value: Any) -> Any:
    """Normalise a raw reply: bytes become str, tuples and sets become lists, map keys become str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, list | tuple | set | frozenset):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        return {decode(k): decode(v) for k, v in value.items()}
    return value


def _wire(cmd: Command) -> tuple[Arg, ...]:
    if isinstance(cmd, Call):
        return cmd.args
    return ("EVALSHA", cmd.script.sha, len(cmd.keys), *cmd.keys, *cmd.args)


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError) or (
        isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def _missing_scripts(batch: Sequence[Command], replies: Sequence[Any]) -> list[int]:
    """Indices of script calls that failed because the server does not know the script yet."""
    return [i for i, (c, r) in enumerate(zip(batch, replies, strict=True)) if _is_noscript(r)]


def _loads(batch: Sequence[Command], missing: Sequence[int]) -> list[tuple[Arg, ...]]:
    scripts = {c.script.sha: c.script for i in missing if isinstance(c := batch[i], Eval)}
    return [("SCRIPT", "LOAD", s.source) for s in scripts.values()]


def _finish(batch: Sequence[Command], replies: Sequence[Any]) -> list[Any]:
    out = []
    for cmd, reply in zip(batch, replies, strict=True):
        if isinstance(reply, Exception) and not cmd.allow_error:
            raise reply
        out.append(reply if isinstance(reply, Exception) else decode(reply))
    return out


Wire = list[tuple[Arg, ...]]


def _round_trips(op: Op[T]) -> Generator[Wire | Sleep, Any, T]:
    """Lower ``op`` to raw round trips: wire commands out, raw replies in, NOSCRIPT handled here."""
    reply: Any = None
    while True:
        try:
            step = op.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Sleep):
            yield step
            reply = None
            continue
        replies: list[Any] = list((yield [_wire(c) for c in step]))
        if missing := _missing_scripts(step, replies):
            yield _loads(step, missing)
            retried = yield [_wire(step[i]) for i in missing]
            for i, again in zip(missing, retried, strict=True):
                replies[i] = again
        reply = _finish(step, replies)


def _pipeline(client: Any, commands: Wire) -> Any:
    pipe = client.pipeline(transaction=False)
    pipe.response_callbacks = {}  # raw replies; see the module docstring
    for args in commands:
        pipe.execute_command(*args)
    return pipe


def run(client: redis.Redis, op: Op[T]) -> T:
    """Execute ``op`` with a blocking client; returns the operation's result."""
    trips = _round_trips(op)
    try:
        step = next(trips)
        while True:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                step = trips.send(None)
            else:
                step = trips.send(_pipeline(client, step).execute(raise_on_error=False))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        op.close()


async def _aexecute(client: redis.asyncio.Redis, commands: Wire) -> Any:
    execute_wire = getattr(client, "execute_wire", None)  # see the module docstring
    if execute_wire is not None:
        return await execute_wire(commands)
    return await _pipeline(client, commands).execute(raise_on_error=False)


async def arun(client: redis.asyncio.Redis, op: Op[T]) -> T:
    """Execute ``op`` with an asyncio client; returns the operation's result."""
    trips = _round_trips(op)
    try:
        step = next(trips)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = trips.send(None)
            else:
                step = trips.send(await _aexecute(client, step))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        op.close()
