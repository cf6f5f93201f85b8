"""The API's Redis client: pooled, failing fast while Redis is down, with a cheaper command packer
and a cheaper way to run the job protocol's round trips.

Why a packer: a submission is one EVALSHA carrying the whole job record (about 40 arguments), and
redis-py's asyncio connection packs arguments by re-joining a growing buffer once per argument
(and its C packer is only used by the blocking client). That cost ~100 µs of CPU per submission,
as much as the rest of the Redis round trip. :class:`FastPackMixin` produces the same RESP bytes
with one join. It is mixed into whichever connection class the URL selects (plain TCP, TLS for
``rediss://``, Unix socket), so AUTH and TLS behave exactly as in redis-py.

Why :meth:`ApiRedis.execute_wire`: every request's round trips go through
:func:`jobqueue.driver.arun`, which ran each as a redis-py pipeline. With redis-py 8 a pipeline
round trip costs far more client CPU than the exchange itself: the pipeline object, the pool's
lock and its observability and event hooks on every checkout and return, the per-call retry and
observability wrappers. ``execute_wire`` does the same exchange on the same kind of connection
(sent as one write, replies read in order, error replies handed back in place, the connection's
own timeouts, its retry policy resending the batch after a lost connection as the pipeline did)
from a plain stack of idle connections of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


class FastPackMixin:
    """``pack_command`` building the whole command with a single ``bytes.join``."""

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # 'CONFIG GET' style literals are sent as separate arguments
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        encode = self.encoder.encode
        parts = [arg.encode() if type(arg) is str else encode(arg) for arg in args]
        return [b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%b\r\n" % (len(p), p) for p in parts])]


_FAST: dict[str, type[AbstractConnection]] = {}


def _fast(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` with the fast packer (one subclass per class, so pools of one kind share it)."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _FAST:
        _FAST[key] = type(f"FastPack{cls.__name__}", (FastPackMixin, cls), {})
    return _FAST[key]


class ApiRedis(redis.asyncio.Redis):
    """redis-py's asyncio client plus :meth:`execute_wire` (see the module docstring); every other
    method is redis-py's own, on the pool's connections."""

    def __init__(self, *, connection_pool: redis.asyncio.ConnectionPool) -> None:
        super().__init__(connection_pool=connection_pool)
        self._idle: list[AbstractConnection] = []
        self._wire: set[AbstractConnection] = set()  # every connection execute_wire made, idle or not

    async def execute_wire(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` (argument tuples) in one write and return their raw replies in order,
        an error reply as its ``ResponseError`` (what a pipeline's ``execute(raise_on_error=False)``
        returns with its response callbacks off). Connection errors and timeouts raise once the
        connection's retry policy gives up; each try resends the whole batch on a new connection."""
        conn = self._checkout()
        try:
            # As the pool checks its own: data waiting on an idle connection (or its end of file)
            # means the server closed it or a reply is stray; reconnect instead of reading it.
            if conn.is_connected and await _stale(conn):
                await conn.disconnect()
            packed = conn.pack_commands(commands)
            return await conn.retry.call_with_retry(
                lambda: _exchange(conn, packed, len(commands)), lambda _error: conn.disconnect()
            )
        finally:
            # After an error or a cancellation redis-py's send and read have closed the connection
            # (so no reply can be left unread on it); the next use reconnects it.
            self._idle.append(conn)

    def _checkout(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        if len(self._wire) >= self.connection_pool.max_connections:
            raise redis.exceptions.ConnectionError("Too many connections")
        conn: AbstractConnection = self.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._wire.add(conn)
        return conn

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        wire, self._wire, self._idle = self._wire, set(), []
        for conn in wire:
            await conn.disconnect()
        await super().aclose(close_connection_pool)


async def _exchange(conn: AbstractConnection, packed: list[bytes], count: int) -> list[Any]:
    await conn.send_packed_command(packed)  # connects first if needed
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except redis.exceptions.ResponseError as exc:  # read whole: the next reply is still ours
            replies.append(exc)
    return replies


async def _stale(conn: AbstractConnection) -> bool:
    can_read = getattr(conn, "can_read", None)  # redis-py 8; older versions name it as below
    try:
        return bool(await (can_read() if can_read is not None else conn.can_read_destructive()))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return True


def connect(url: str, timeout: float) -> ApiRedis:
    """A client that fails fast while Redis is down (requests get 503 and retry) and reconnects by
    itself on the next command once it is back. One retry covers a pooled connection the server
    closed while idle (e.g. after a restart). AUTH and TLS come from the URL
    (``redis://:password@host``, ``rediss://host?ssl_cert_reqs=required&ssl_ca_certs=...``)."""
    pool = redis.asyncio.ConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.2), 1),
        max_connections=512,
    )
    pool.connection_class = _fast(pool.connection_class)
    return ApiRedis(connection_pool=pool)
