"""The demo's progress: a live panel in a terminal, plain periodic lines in CI logs.

Every number is in trace time (the real system's seconds): durations and latencies multiplied by
the speedup, rates divided by it, so the view reads like the production system it stands for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from autoscaler.demo.plan import Plan, Traffic
from autoscaler.demo.traffic import Ledger
from autoscaler.loop import TickReport

PLAIN_EVERY_SECONDS = 10.0
"""Wall seconds between two plain lines when the output is not a terminal."""


@dataclass(frozen=True, slots=True)
class Status:
    """One moment of the run, in trace units."""

    elapsed: float
    duration: float
    sent: int
    total: int
    submitted: int
    finished: int
    rejected: int
    ready: int = 0
    starting: int = 0
    draining: int = 0
    desired: int = 0
    waiting: int = 0
    in_flight: int = 0
    rate: float | None = None
    forecast: float | None = None
    forecast_upper: float | None = None
    reason: str = ""
    p50: float | None = None
    p95: float | None = None
    within_slo: float | None = None


def status_of(
    plan: Plan, traffic: Traffic, elapsed_wall: float, ledger: Ledger, report: TickReport | None
) -> Status:
    """The view's numbers from the client's ledger and the daemon's last tick."""
    summary = ledger.latency_summary(plan.speedup, plan.workload.slo_seconds)
    base = Status(
        elapsed=min(traffic.duration, elapsed_wall * plan.speedup),
        duration=traffic.duration,
        sent=ledger.sent,
        total=len(traffic),
        submitted=len(ledger.submitted),
        finished=len(ledger.finished),
        rejected=sum(ledger.rejected.values()),
        p50=summary[0] if summary else None,
        p95=summary[1] if summary else None,
        within_slo=summary[2] if summary else None,
    )
    if report is None or report.snapshot is None or report.decision is None:
        return base
    snap, est = report.snapshot, report.estimates or {}

    def per_trace_second(key: str) -> float | None:
        # A trend can take a forecast below zero; no arrival rate is, so none is shown as one.
        return max(0.0, est[key] / plan.speedup) if key in est else None

    return replace(
        base,
        ready=snap.ready,
        starting=snap.starting,
        draining=snap.draining,
        desired=report.decision.desired,
        waiting=snap.waiting,
        in_flight=snap.in_flight,
        rate=per_trace_second("rate_now"),
        forecast=per_trace_second("forecast_mean"),
        forecast_upper=per_trace_second("forecast_upper"),
        reason=report.decision.reason,
    )


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _percent(share: float | None, unit: str) -> str:
    return _num(None if share is None else 100 * share, ".1f", unit)


def _latency(s: Status) -> str:
    return (
        f"p50 {_num(s.p50, '.1f', ' s')}   p95 {_num(s.p95, '.1f', ' s')}   "
        f"within SLO {_percent(s.within_slo, ' %')}"
    )


def panel(plan: Plan, s: Status) -> Table:
    """The live panel: one row per aspect of the system."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    share = s.elapsed / s.duration if s.duration else 1.0
    bar = "█" * round(24 * share) + "░" * (24 - round(24 * share))
    table.add_row("trace time", f"{s.elapsed:,.0f} / {s.duration:,.0f} s  {bar}  ({plan.speedup:g}x speed)")
    table.add_row(
        "workers",
        f"ready {s.ready}   starting {s.starting}   draining {s.draining}   "
        f"(desired {s.desired}, max {plan.max_workers})",
    )
    table.add_row("queue", f"waiting {s.waiting}   in flight {s.in_flight}")
    forecast = f"{_num(s.forecast, '.2f', '/s')} (upper {_num(s.forecast_upper, '.2f', '/s')})"
    table.add_row("arrivals", f"now {_num(s.rate, '.2f', '/s')}   forecast {forecast}")
    rejected = f"   rejected {s.rejected}" if s.rejected else ""
    table.add_row(
        "jobs", f"sent {s.sent}/{s.total}   accepted {s.submitted}   finished {s.finished}{rejected}"
    )
    table.add_row("latency", _latency(s))
    table.add_row("decision", f"{plan.policy}: {s.reason or '-'}")
    return table


def line(s: Status) -> str:
    """The same numbers on one line, for logs (the decision last: the reason the policy gave)."""
    return (
        f"t={s.elapsed:.0f}/{s.duration:.0f}s ready={s.ready} starting={s.starting} "
        f"draining={s.draining} desired={s.desired} waiting={s.waiting} in_flight={s.in_flight} "
        f"rate={_num(s.rate, '.2f', '/s')} forecast={_num(s.forecast, '.2f', '/s')} "
        f"sent={s.sent}/{s.total} finished={s.finished} p50={_num(s.p50, '.1f', 's')} "
        f"p95={_num(s.p95, '.1f', 's')} slo={_percent(s.within_slo, '%')} decision={s.reason or '-'}"
    )


class View:
    """``with View(plan, console) as view: view.show(status)``: a live panel or periodic lines."""

    def __init__(self, plan: Plan, console: Console, *, live: bool | None = None) -> None:
        self._plan = plan
        self._console = console
        self._live = (
            Live(console=console, refresh_per_second=4, transient=False)
            if (console.is_terminal if live is None else live)
            else None
        )
        self._next_line = 0.0
        self._last: Status | None = None

    def show(self, status: Status) -> None:
        self._last = status
        if self._live is not None:
            self._live.update(panel(self._plan, status))
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + PLAIN_EVERY_SECONDS
            self._console.print(line(status), highlight=False, soft_wrap=True)

    def __enter__(self) -> View:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
        elif self._last is not None:
            self._console.print(line(self._last), highlight=False, soft_wrap=True)
