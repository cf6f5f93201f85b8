"""What the Azure code target asks of any policy: static pools chosen in hindsight.

The issue's target on the Azure code trace (>= 85 % within SLO at <= 1.4x the oracle) is scored
with the default startup-aware policy, which learns its standing pool from the bursts it has seen.
This asks how far hindsight gets on the same replay (1 warm pod at t = 0, startup 30 s):

* a static pool of N ordered at t = 0, N chosen knowing the whole trace;
* the default policy until t = T, then a static pool of N, again chosen knowing the whole trace.

If even the second lands on the target's edge, the gap is what the trace does not tell before it
happens, not a sizing rule still to be tuned.

    .venv/bin/python benchmarks/azure_hindsight.py [--trace PATH] [--out reports/azure_hindsight.md]

About ten seconds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from autoscaler.engine.baselines import StaticPolicy
from autoscaler.engine.registry import STARTUP_AWARE, make_policy
from autoscaler.engine.snapshot import Decision, Policy, Snapshot, SurgeResponder
from experiments.render import benchmark_command, publish, report_header
from experiments.replay import Outcome, Prepared, Setup, prepare
from experiments.replay import run as replay
from experiments.scorecard import TARGETS
from experiments.sim import SimResult
from experiments.traces import AZURE_CODE_TRACE, trace_argument

TARGET = TARGETS["azure_llm_code_2023.csv"]
POOLS = (54, 56, 58, 60, 62)
SWITCH_TIMES = (180.0, 300.0, 900.0)


class ThenStatic:
    """``first`` until ``switch_at``, then a fixed pool: the Deployment scaled to ``replicas``."""

    def __init__(self, first: Policy, switch_at: float, replicas: int) -> None:
        self.first = first
        self.switch_at = switch_at
        self.static = StaticPolicy(replicas)

    @property
    def name(self) -> str:
        return f"{self.first.name} until {self.switch_at:g} s, then {self.static.name}"

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.now < self.switch_at:
            return self.first.decide(snapshot)
        return self.static.decide(snapshot)

    def surge(self, snapshot: Snapshot) -> Decision | None:
        """``first`` answers the watch until the switch; the fixed pool never does."""
        if snapshot.now < self.switch_at and isinstance(self.first, SurgeResponder):
            return self.first.surge(snapshot)
        return None


class PoolWatch:
    """The default policy, keeping its learned standing pool (the ``standing_pool`` term) per tick."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.pool: list[tuple[float, float]] = []

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, snapshot: Snapshot) -> Decision:
        decision = self.policy.decide(snapshot)
        self.pool.append((snapshot.now, decision.terms.get("standing_pool", 0.0)))
        return decision

    def surge(self, snapshot: Snapshot) -> Decision | None:
        return self.policy.surge(snapshot) if isinstance(self.policy, SurgeResponder) else None


PERIODS = ((0.0, 300.0), (300.0, 900.0), (900.0, 2100.0), (2100.0, math.inf))
BURST_GAP, BURST_SECONDS = 20.0, 30.0
FIRST_BURST = (180.0, 300.0)


def after_idle_share(arrivals: np.ndarray) -> float:
    """Share of jobs within ``BURST_SECONDS`` of a job that follows ``BURST_GAP`` s without one."""
    starts = arrivals[np.concatenate(([True], np.diff(arrivals) >= BURST_GAP))]
    last_start = starts[np.searchsorted(starts, arrivals, side="right") - 1]
    return float(np.mean(arrivals - last_start < BURST_SECONDS))


def misses(prepared: Prepared, watched: PoolWatch, result: SimResult) -> list[str]:
    """Where the default policy's misses fall against ``static:54``'s, and what its pool learns."""
    arrivals = prepared.trace.arrivals
    runs = [("startup-aware", result), ("static:54", replay(prepared, StaticPolicy(54))[1])]
    lines = [
        "",
        "## Where the misses are",
        "",
        f"{after_idle_share(arrivals):.0%} of the jobs arrive within {BURST_SECONDS:g} s of a job that "
        f"follows {BURST_GAP:g} s or more without one: only warm pods serve them in time.",
        "",
        "| policy | "
        + " | ".join(
            f"misses {a:g}-{b:g} s" if b < math.inf else f"misses from {a:,.0f} s" for a, b in PERIODS
        )
        + " | misses in 180-300 s |",
        "|:---|" + "---:|" * (len(PERIODS) + 1),
    ]
    for label, run in runs:
        late = run.latency > prepared.setup.slo + 1e-9
        cells = [int(np.count_nonzero(late & (arrivals >= a) & (arrivals < b))) for a, b in PERIODS]
        first = int(np.count_nonzero(late & (arrivals >= FIRST_BURST[0]) & (arrivals < FIRST_BURST[1])))
        lines.append(f"| {label} | " + " | ".join(f"{c:,}" for c in cells) + f" | {first:,} |")
    jobs = [int(np.count_nonzero((arrivals >= a) & (arrivals < b))) for a, b in PERIODS]
    lines.append(
        "| jobs | "
        + " | ".join(f"{j:,}" for j in jobs)
        + f" | {int(np.count_nonzero((arrivals >= FIRST_BURST[0]) & (arrivals < FIRST_BURST[1]))):,} |"
    )
    times, pool = np.array([t for t, _ in watched.pool]), np.array([p for _, p in watched.pool])
    early, late_hour = pool[times < 900.0], pool[times >= 2100.0]
    lines += [
        "",
        f"The default's learned pool: {int(np.count_nonzero(arrivals < FIRST_BURST[0]))} jobs seen before "
        f"t = {FIRST_BURST[0]:g} s; at most {early.max():.0f} pods before 900 s; "
        f"{np.min(late_hour):.0f}-{np.max(late_hour):.0f} from 2,100 s.",
    ]
    return lines


PREFIX_POOLS = range(20, 101, 2)
PREFIX_TIMES = range(200, 3401, 200)


def against_hindsight_so_far(prepared: Prepared, watched: PoolWatch) -> list[str]:
    """The learned pool at t beside the static pool hindsight picks for the jobs that arrived by t.

    The learned pool answers, from the jobs seen so far, how many warm pods would have met the
    target on them. Hindsight's answer to the same question (the smallest static pool, ordered at
    t = 0 and replayed in full, whose jobs before t meet the target) says what the jobs so far
    allow. If the two move together, the pool's swings are the trace's: no estimate made from
    the past can tell at 1,000 s that the next 40 minutes need a third fewer pods than the first 17.
    """
    arrivals, slo = prepared.trace.arrivals, prepared.setup.slo
    on_time = {n: replay(prepared, StaticPolicy(n))[1].latency <= slo + 1e-9 for n in PREFIX_POOLS}
    times, pool = np.array([t for t, _ in watched.pool]), np.array([p for _, p in watched.pool])
    lines = [
        "",
        "## The learned pool against hindsight on the jobs so far",
        "",
        f"At each t: the learned pool, and the smallest static pool (of {PREFIX_POOLS.start}-"
        f"{PREFIX_POOLS.stop - 1}, ordered at t = 0) whose jobs that arrived before t meet "
        f">= {TARGET.attainment:.0%} within SLO.",
        "",
        "| t (s) | jobs so far | hindsight pool for them | learned pool |",
        "|---:|---:|---:|---:|",
    ]
    for t in PREFIX_TIMES:
        seen = arrivals < t
        best = next((str(n) for n in PREFIX_POOLS if on_time[n][seen].mean() >= TARGET.attainment), "> 100")
        learned = pool[times <= t][-1]
        lines.append(f"| {t:,} | {int(np.count_nonzero(seen)):,} | {best} | {learned:.0f} |")
    return lines


def outcomes(prepared: Prepared) -> list[Outcome]:
    rows = [replay(prepared, make_policy(STARTUP_AWARE, prepared.workload))[0]]
    rows += [replay(prepared, StaticPolicy(n))[0] for n in POOLS]
    for at in SWITCH_TIMES:
        for n in POOLS:
            rows.append(replay(prepared, ThenStatic(make_policy(STARTUP_AWARE, prepared.workload), at, n))[0])
    return rows


def render(prepared: Prepared, rows: list[Outcome], command: str) -> str:
    lines = [
        *report_header(
            "Azure code: how far hindsight gets",
            command,
            f"{prepared.setup.describe()}. Oracle {prepared.oracle:,.0f} pod-seconds",
        ),
        f"Target: >= {TARGET.attainment:.0%} within SLO at <= {TARGET.cost:g}x the oracle. Every static",
        "pool below is ordered at the moment named and chosen knowing the whole trace; no online",
        "policy can know N in advance.",
        "",
        "| policy | within SLO | × oracle | meets the target |",
        "|:---|---:|---:|:---:|",
    ]
    for row in rows:
        met = "yes" if TARGET.met(row) else "no"
        lines.append(f"| {row.policy} | {row.slo_attainment:.1%} | {row.cost_vs_oracle:.3f} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=str(AZURE_CODE_TRACE))
    parser.add_argument("--out", type=Path, default=Path("reports/azure_hindsight.md"))
    args = parser.parse_args(argv)
    prepared = prepare(trace_argument(parser, "--trace", args.trace), Setup())
    command = benchmark_command("benchmarks/azure_hindsight.py", argv)
    watched = PoolWatch(make_policy(STARTUP_AWARE, prepared.workload))
    result = replay(prepared, watched)[1]
    sections = [*misses(prepared, watched, result), *against_hindsight_so_far(prepared, watched)]
    text = render(prepared, outcomes(prepared), command) + "\n".join(sections) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
