"""The facts about one scaled workload that every policy is sized against."""

from __future__ import annotations

from dataclasses import dataclass, replace

from autoscaler.engine.snapshot import MAX_SLOTS_PER_POD, Decision


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What the operator knows about a worker Deployment before anything is measured.

    ``startup_seconds`` and ``service_seconds`` are defaults used until enough live samples exist;
    ``slo_seconds`` bounds a job's latency from submission to completion. ``tick_seconds`` is the
    control period; between ticks the loop checks the queue every ``watch_seconds`` (0: never) so a
    policy that answers surges (:class:`~autoscaler.engine.snapshot.SurgeResponder`) can order pods
    for a burst at its first second instead of at the next tick.
    """

    slo_seconds: float = 10.0
    startup_seconds: float = 30.0
    service_seconds: float = 5.0
    slots_per_pod: int = 1
    tick_seconds: float = 5.0
    min_replicas: int = 0
    max_replicas: int = 200
    watch_seconds: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "slo_seconds": self.slo_seconds > 0,
            "startup_seconds": self.startup_seconds >= 0,
            "service_seconds": self.service_seconds > 0,
            "slots_per_pod": 1 <= self.slots_per_pod <= MAX_SLOTS_PER_POD,  # see MAX_SLOTS_PER_POD
            "tick_seconds": self.tick_seconds > 0,
            "watch_seconds": self.watch_seconds >= 0,
            "min_replicas": self.min_replicas >= 0,
            "max_replicas": self.max_replicas >= max(self.min_replicas, 1),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid WorkloadSpec field(s): {', '.join(bad)} in {self!r}")

    @property
    def watching(self) -> bool:
        """Whether the queue is checked between ticks at all (a watch as long as the tick is not)."""
        return 0 < self.watch_seconds < self.tick_seconds

    @property
    def look_seconds(self) -> float:
        """How often the queue is looked at: the watch's interval when watching, else the tick."""
        return self.watch_seconds if self.watching else self.tick_seconds


def slo_problem(
    slo_seconds: float,
    service_seconds: float,
    *,
    slo_name: str = "slo_seconds",
    service_name: str = "service_seconds",
) -> str | None:
    """Why an SLO cannot be met by jobs that take ``service_seconds`` each, or None if it can be.

    A job's latency is at least its service time, so an SLO at or below it is missed by every job
    whatever the pool: a policy sized for it would order up to the maximum replicas for 0 %
    attainment. Configs and the experiments' options are refused with this, naming both of their
    fields; :class:`WorkloadSpec` itself does not refuse it, since a measured or replayed mean may
    cross the SLO at run time (the daemon then says so, see ``autoscaler.metrics``).
    """
    if slo_seconds > service_seconds:
        return None

    def shown(name: str, value: float) -> str:  # an option as typed (--slo 4), a field as a config's
        return f"{name} {value:g}" if name.startswith("-") else f"{name} ({value:g})"

    return (
        f"{shown(slo_name, slo_seconds)} must be longer than {shown(service_name, service_seconds)}: every "
        "job's latency is at least its service time, so no replica count could meet this SLO (the "
        "policy would scale up to the maximum for 0 % of jobs within it)"
    )


def within_bounds(decision: Decision, workload: WorkloadSpec) -> Decision:
    """``decision`` with its count inside the target's min/max replicas.

    The bounds are the operator's hard limits and win over every other rule, whichever policy
    decided: the baselines keep their own (``keda`` its HPA ``min_replicas``, 1 by default;
    ``static:N`` its N), so without this a target with ``min_replicas: 3`` under ``policy: keda``
    would be scaled to 1 when idle and ``static:50`` would ignore ``max_replicas: 30``. What the
    policy asked for stays in the terms. The daemon's loop and the simulator both apply it, so a
    replay with a floor scales as the daemon would.
    """
    low, high = workload.min_replicas, workload.max_replicas
    desired = min(max(decision.desired, low), high)
    if desired == decision.desired:
        return decision
    reason = "min-replicas" if desired > decision.desired else "max-replicas"
    terms = {**decision.terms, "policy_desired": float(decision.desired)}
    return replace(decision, desired=desired, reason=reason, terms=terms)
