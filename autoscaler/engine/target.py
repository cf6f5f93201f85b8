"""The facts about one scaled workload that every policy is sized against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What the operator knows about a worker Deployment before anything is measured.

    ``startup_seconds`` and ``service_seconds`` are defaults used until enough live samples exist;
    ``slo_seconds`` bounds a job's latency from submission to completion.
    """

    slo_seconds: float = 10.0
    startup_seconds: float = 30.0
    service_seconds: float = 5.0
    slots_per_pod: int = 1
    tick_seconds: float = 5.0
    min_replicas: int = 0
    max_replicas: int = 200

    def __post_init__(self) -> None:
        checks = {
            "slo_seconds": self.slo_seconds > 0,
            "startup_seconds": self.startup_seconds >= 0,
            "service_seconds": self.service_seconds > 0,
            "slots_per_pod": self.slots_per_pod >= 1,
            "tick_seconds": self.tick_seconds > 0,
            "min_replicas": self.min_replicas >= 0,
            "max_replicas": self.max_replicas >= max(self.min_replicas, 1),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid WorkloadSpec field(s): {', '.join(bad)} in {self!r}")
