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

from jobqueue.errors import describe, misconfigured, remedy, transient

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
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"refresh-{self.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the loop and wait for it, never forever: a cancellation that lands inside a
        Redis client's own timeout can come out as a TimeoutError (an asyncio race), which the
        loop would log and survive; the stop flag ends it at the next turn all the same."""
        if self._task is None:
            return
        self._stopping = True
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            log.warning("%s: refresher did not stop within %s s", self.name, timeout)
        elif not self._task.cancelled():
            with contextlib.suppress(Exception):
                self._task.result()
        self._task = None

    async def run_once(self) -> bool:
        """One tick; True if it succeeded. Unexpected errors are logged, never fatal to the loop."""
        try:
            await self.tick()
        except Exception as exc:
            if misconfigured(exc):  # the operator's to fix: one line saying what, not a traceback
                if self.healthy:
                    log.error(
                        "%s: Redis %s; %s; keeping the last value", self.name, describe(exc), remedy(exc)
                    )
            elif not transient(exc):
                log.exception("%s: refresh failed; keeping the last value", self.name)
            elif self.healthy:  # an outage (BUSY, LOADING, down, ...): logged once, not per tick
                log.warning("%s: redis unavailable (%r: %s); keeping the last value", self.name, exc, exc)
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
        while not self._stopping:  # the first read is the caller's (``run_once`` before ``start``)
            await asyncio.sleep(self.interval)
            if not self._stopping:
                await self.run_once()
