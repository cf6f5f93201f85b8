"""When the worker may reclaim after Redis was out of its reach: a record of its contact with Redis.

Why reclaim waits at all. While Redis is unreachable no lease is renewed, the live workers' as
little as the dead ones', so after a long enough outage every running job looks abandoned;
reclaiming as soon as Redis answers again would take jobs from live holders before their next
heartbeats renew them. A visibility timeout after the outage ended, only the dead holders' entries
are still idle.

Why not every failed call is such an outage. Each failure (of the heartbeat thread or of the job
loop) used to push the next reclaim a visibility timeout away from the loop's next pass. A
heartbeat that failed at every beat (a transient error each time, while the loop's own calls went
through) thus postponed the reclaim for ever, and a dead peer's jobs stayed pending. What can let a
live holder's lease lapse is not a failure but a *blackout*: a stretch in which Redis answered none
of this worker's calls, from its last success before to its first success after. A holder renewed
about a heartbeat interval at most before the blackout began and renews about one at most after it
ends (give or take its beats' round trips), so a blackout shorter than
``visibility_timeout - 2 * heartbeat_seconds`` cannot have aged a live lease to the visibility
timeout: it postpones nothing. A longer one postpones the reclaim to a visibility timeout after its
end, as before, and so does a failure before the worker ever reached Redis (an outage of unknown
length). Failures with successes between them are short blackouts, however often they recur. (With
``2 * heartbeat_seconds >= visibility_timeout`` every blackout counts as long; a single missed
beat then lets a live lease lapse anyway.)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RedisContact:
    """Successes and failures of this worker's Redis calls, from any thread; answers whether a
    reclaim may run now (:meth:`may_reclaim`).

    Only failures that say Redis did not serve the call (:func:`jobqueue.errors.transient`: down,
    unreachable, or refusing for a while, as when it cannot persist or is full) are to be reported:
    a command error is an answer, and says nothing about other workers' renewals.
    """

    def __init__(
        self,
        visibility_timeout: float,
        heartbeat_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._wait = visibility_timeout
        # Longest blackout that postpones nothing (none does when 2 beats already exceed the timeout).
        self._harmless = visibility_timeout - 2 * heartbeat_seconds
        self._lock = threading.Lock()
        self._reached_at = -math.inf  # never yet: a blackout from now on is of unknown length
        self._blackout_from: float | None = None  # the last success before the failures, if failing
        self._resume_at = -math.inf

    def reached(self) -> None:
        """A call succeeded: a blackout in progress ends now, postponing the reclaim if it was long."""
        with self._lock:
            now = self._clock()
            if self._blackout_from is not None and now - self._blackout_from >= self._harmless:
                self._resume_at = max(self._resume_at, now + self._wait)
            self._blackout_from = None
            self._reached_at = now

    def failed(self) -> None:
        """A call failed transiently: a blackout begins, counted from the last success (the calls
        between that one and this one may have failed too, unseen)."""
        with self._lock:
            if self._blackout_from is None:
                self._blackout_from = self._reached_at

    def may_reclaim(self) -> bool:
        """Whether no blackout, past or in progress, may have kept live holders from renewing."""
        with self._lock:
            now = self._clock()
            if self._blackout_from is not None and now - self._blackout_from >= self._harmless:
                return False  # in a long blackout: wait for its end, then a visibility timeout
            return now >= self._resume_at
