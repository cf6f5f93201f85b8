"""The control loop's clock: epoch seconds that never go backwards, whatever the wall clock does.

Why: the policy keeps windows stamped with each tick's ``now`` (the scale-down window's peak, the
standing pool's refresh, the period detector's checks) and assumes ``now`` only moves forward.
The wall clock does not: an NTP correction steps it, and a step back of D seconds froze every
window for D seconds (the peak held, no pool refresh) until the wall clock caught up, while a step
forward cut them short. A monotonic clock never steps, but it counts from an arbitrary origin, and
the timestamps the loop reads from outside (pod creation and Ready times from Kubernetes, reads of
Redis) are epoch seconds.

So the timeline is the wall clock at start plus monotonic time since: epoch seconds while nothing
steps, and after a step it keeps counting real seconds, ``offset`` ahead of (or behind) the wall
clock. Every wall-clock timestamp that enters a snapshot is moved by the current ``offset``
(:meth:`Timeline.from_wall`), so a pod's age, ``now - created_at``, stays what the wall clock says
it is now. Times shown to the outside (metrics, probes: compared with ``time()`` there) go back to
the wall clock with :meth:`Timeline.to_wall`.

A new process starts its timeline at the wall clock again; :meth:`Timeline.not_before` moves it on
to the time of a saved state that is ahead of it (a previous process whose wall clock stepped
back), so the restored windows do not freeze either.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Timeline:
    """Wall clock at start + monotonic time since; see the module docstring for why."""

    def __init__(self, wall: Clock = time.time, monotonic: Clock = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()  # timeline = monotonic() + origin

    def now(self) -> float:
        """The current time on the timeline (epoch seconds, never decreasing)."""
        return self._monotonic() + self._origin

    def offset(self) -> float:
        """How far the timeline is ahead of the wall clock now (0 until the wall clock steps)."""
        return self.now() - self._wall()

    def from_wall(self, at: float) -> float:
        """A wall-clock timestamp read just now (a pod's creation, a Redis read) on the timeline."""
        return at + self.offset()

    def to_wall(self, at: float) -> float:
        """A time on the timeline as the wall clock reads it now (for metrics and probes)."""
        return at - self.offset()

    def not_before(self, at: float) -> float:
        """Move the timeline on to ``at`` if it is behind; returns how far it moved (0: not at all).

        Only forward, so ``now`` still never goes backwards.
        """
        behind = at - self.now()
        if behind <= 0:
            return 0.0
        self._origin += behind
        return behind
