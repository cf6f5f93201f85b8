"""The contract between a queue-signal source and the control loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QueueSignals:
    """One read of a queue.

    ``arrivals_total`` is a monotonic counter of jobs ever submitted (the loop differences it
    between ticks), or ``None`` when the source cannot count arrivals and the loop must estimate
    them from queue deltas plus completions. ``service_times`` are the durations of jobs that
    completed since the previous read. ``busy_by_worker`` maps worker (pod) names to the number of
    jobs each is serving now, from worker heartbeats; pods missing from it are treated as idle.
    ``latencies`` are submission-to-finish times of jobs that reached a final outcome since the
    previous read (for the SLO metrics; sources that cannot know them report none).
    """

    observed_at: float
    waiting: int
    in_flight: int
    arrivals_total: int | None
    service_times: tuple[float, ...] = ()
    completions: int = 0
    busy_by_worker: Mapping[str, int] = field(default_factory=dict)
    latencies: tuple[float, ...] = ()


class SignalSource(Protocol):
    """Reads one queue. Raises ``SourceUnavailableError`` when the signals cannot be had fresh."""

    def read(self) -> QueueSignals: ...

    def pulse(self) -> QueueSignals:
        """The counts alone (waiting, in flight, arrivals), cheaply, for the watch between ticks.

        No completions and no worker states; reading it consumes nothing the next :meth:`read`
        would return.
        """
        ...

    def close(self) -> None: ...


class SourceUnavailableError(RuntimeError):
    """The queue cannot be read now (server down, timeout): the loop holds the replica count."""
