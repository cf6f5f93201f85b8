"""Background refreshers: a value read from Redis every few hundred ms instead of per request.

The admission check (backlog) and version routing (traffic weights) need Redis state on every
submission; reading it per request would double the hot path's round trips. A refresher keeps the
last good value when Redis is unreachable (submissions then fail with 503 anyway) and logs an
outage once, not once per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from api.errors import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)


class Refresher:
    """Runs ``tick`` every ``interval`` seconds on its own task until :meth:`stop`."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], Awaitable[None]],
        interval: float,
        on_health: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self.name = name
        self.tick = tick
        self.interval = interval
        self.on_health = on_health
        self.healthy = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"refresh-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> bool:
        """One tick; True if it succeeded. Unexpected errors are logged, never fatal to the loop."""
        try:
            await self.tick()
        except REDIS_UNAVAILABLE as exc:
            if self.healthy:
                log.warning("%s: redis unavailable (%s); keeping the last value", self.name, exc)
            self._health(False)
            return False
        except Exception:
            log.exception("%s: refresh failed; keeping the last value", self.name)
            self._health(False)
            return False
        if not self.healthy:
            log.info("%s: redis reachable again", self.name)
        self._health(True)
        return True

    def _health(self, ok: bool) -> None:
        self.healthy = ok
        self.on_health(ok)

    async def _run(self) -> None:
        while True:  # the first read is the caller's (``run_once`` before ``start``)
            await asyncio.sleep(self.interval)
            await self.run_once()
