"""The API's Redis client: pooled, failing fast while Redis is down, with a cheaper command packer.

Why a packer: a submission is one EVALSHA carrying the whole job record (about 40 arguments), and
redis-py's asyncio connection packs arguments by re-joining a growing buffer once per argument
(and its C packer is only used by the blocking client). That cost ~100 µs of CPU per submission,
as much as the rest of the Redis round trip. :class:`FastPackMixin` produces the same RESP bytes
with one join. It is mixed into whichever connection class the URL selects (plain TCP, TLS for
``rediss://``, Unix socket), so AUTH and TLS behave exactly as in redis-py.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
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
        parts: list[Any] = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if type(arg) is str else encode(arg)
            parts += (b"$%d\r\n" % len(data), data, b"\r\n")
        return [b"".join(parts)]


_FAST: dict[str, type[AbstractConnection]] = {}


def _fast(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` with the fast packer (one subclass per class, so pools of one kind share it)."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _FAST:
        _FAST[key] = type(f"FastPack{cls.__name__}", (FastPackMixin, cls), {})
    return _FAST[key]


def connect(url: str, timeout: float) -> redis.asyncio.Redis:
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
    return redis.asyncio.Redis(connection_pool=pool)
