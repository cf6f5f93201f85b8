"""A simulated autoscaler restart: the policy replaced, at one moment, by a new process's policy.

Used by ``benchmarks/restart.py`` (what a restart costs, and what the saved state buys back) and
by the tests of :mod:`autoscaler.engine.state` (a restored policy decides exactly as the original).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Literal

from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.engine.snapshot import Decision, Snapshot

Mode = Literal["cold", "history", "restored"]
MODES: tuple[Mode, ...] = ("cold", "history", "restored")
HISTORY_SECONDS = 3600.0  # the stream source's default warm_start_seconds


class RestartedAt:
    """``make()``'s policy until ``at``; then a fresh ``make()`` started as ``mode`` says.

    * cold: knows nothing;
    * history: its forecaster warmed from the last hour of ``arrivals`` (what the daemon does
      without saved state: the completions stream carries each job's submission time, so it reads
      these same times, less the jobs still queued or running at the restart);
    * restored: restored from the old policy's export, through JSON, as the daemon does from Redis.
      The parts the restore skipped are kept in ``skipped``.
    """

    def __init__(
        self,
        make: Callable[[], StartupAwarePolicy],
        at: float,
        mode: Mode = "restored",
        arrivals: Sequence[float] = (),
    ) -> None:
        self.make = make
        self.policy = make()
        self.at = at
        self.mode = mode
        self.arrivals = arrivals
        self.restarted = False
        self.skipped: list[str] = []
        self.saved_bytes = 0  # the old policy's state as JSON at the restart: what Redis would hold

    @property
    def name(self) -> str:
        return f"restart at {self.at:g} s, {self.mode}"

    def decide(self, snapshot: Snapshot) -> Decision:
        if not self.restarted and snapshot.now >= self.at:
            self.restarted = True
            text = json.dumps(self.policy.export_state(), allow_nan=False)
            self.saved_bytes = len(text.encode())
            saved = json.loads(text)
            self.policy = self.make()
            if self.mode == "restored":
                self.skipped = self.policy.restore_state(saved)
            elif self.mode == "history":
                now = snapshot.now
                seen = [t for t in self.arrivals if now - HISTORY_SECONDS <= t < now]
                self.policy.forecaster.warm_start(seen, now)
        return self.policy.decide(snapshot)

    def surge(self, snapshot: Snapshot) -> Decision | None:
        """The current policy answers the watch between ticks, as the daemon's would."""
        return self.policy.surge(snapshot)
