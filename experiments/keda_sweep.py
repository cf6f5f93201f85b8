"""The seed project's experiment: can any KEDA ``listLength`` match the startup-aware policy?

KEDA users have one knob. A small ``listLength`` orders pods for every few queued jobs (fast, costly);
a large one waits for a deep backlog (cheap, slow). The sweep puts each setting on the
cost-versus-SLO plane beside the startup-aware policy on the same traces, and writes Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.engine.registry import STARTUP_AWARE
from experiments.generators import OnOff, Poisson, Ramp, Shape, Step, generate
from experiments.render import COLUMNS, invocation, markdown_table, report_header
from experiments.replay import Outcome, Setup, prepare, run_policy
from experiments.traces import Trace
from experiments.tune import grid_points, run_grid

LIST_LENGTHS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)

# Named synthetic traces for the committed report; fixed seeds make them reproducible.
SYNTHETIC: dict[str, tuple[Shape, str]] = {
    "smooth": (Poisson(rate=5.0, duration=3600.0), "Poisson 5 jobs/s for 1 h"),
    "ramp": (Ramp(), "0.5 -> 15 jobs/s linear over 10 min (from t=300 s), 30 min total"),
    "flash": (Step(), "1 job/s with a 10x flash crowd at t=600 s for 5 min, 30 min total"),
    "bursts": (OnOff(), "10 jobs/s for 30 s every 5 min, 1 h"),
}


def synthetic_trace(name: str, seed: int) -> tuple[Trace, str]:
    if name not in SYNTHETIC:
        raise ValueError(f"unknown synthetic trace {name!r}; valid: {', '.join(SYNTHETIC)}")
    shape, text = SYNTHETIC[name]
    arrivals, _ = generate(shape, seed=seed)
    return Trace(f"synthetic:{name}", arrivals - arrivals[0]), f"{text}, seed {seed}"


@dataclass(frozen=True, slots=True)
class Section:
    trace: Trace
    about: str
    oracle: float
    outcomes: list[Outcome]


def sweep_trace(
    trace: Trace,
    about: str,
    setup: Setup,
    compare: Sequence[str],
    *,
    list_lengths: Sequence[float] = LIST_LENGTHS,
    processes: int = 2,
) -> Section:
    prepared = prepare(trace, setup)
    points = grid_points({"list_length": list(list_lengths)})
    keda = [t.outcome for t in run_grid(prepared, "keda", points, processes)]
    keda = [
        Outcome(**{**o.as_json(), "policy": f"keda listLength={p['list_length']:g}"})
        for o, p in zip(keda, points, strict=True)
    ]
    others = [run_policy(prepared, spec)[0] for spec in compare]
    return Section(trace, about, prepared.oracle, keda + others)


def _verdict(section: Section, compare: Sequence[str]) -> str:
    """One sentence per compared policy: does any KEDA setting dominate it, or does it dominate?"""
    # The swept settings only: a compared spec may be a KEDA variant too (keda:syncOffset=0), and
    # named by prefix it was "matched or beaten" by itself.
    keda = [o for o in section.outcomes if o.policy not in compare]
    lines = []
    for other in (o for o in section.outcomes if o.policy in compare):
        beaten_by = [
            k.policy
            for k in keda
            if k.slo_attainment >= other.slo_attainment and k.cost_vs_oracle <= other.cost_vs_oracle
        ]
        dominated = [
            k.policy
            for k in keda
            if k.slo_attainment <= other.slo_attainment and k.cost_vs_oracle >= other.cost_vs_oracle
        ]
        if beaten_by:
            lines.append(f"- `{other.policy}` is matched or beaten on both axes by: {', '.join(beaten_by)}.")
        else:
            lines.append(
                f"- No KEDA listLength matches `{other.policy}` on both axes; it dominates "
                f"{len(dominated)} of {len(keda)} settings ({', '.join(dominated) or 'none'})."
            )
    return "\n".join(lines)


def render(sections: Sequence[Section], setup: Setup, compare: Sequence[str]) -> str:
    lines = [
        *report_header(
            "KEDA `listLength` sweep versus the startup-aware policy", invocation(), setup.describe()
        ),
        "Cost is pod-seconds (creation to exit) divided by the zero-wait clairvoyant oracle's; "
        '"within SLO" is the share of jobs whose latency (arrival to completion) is within the SLO.',
        "KEDA is modelled as its Redis scaler feeding the HPA with default behaviour "
        "(15 s sync, tolerance 0.1, up max(+100 %, +4)/15 s, down stabilization 300 s, min 1).",
    ]
    for section in sections:
        lines += [
            "",
            f"## {section.trace.name}",
            "",
            f"{section.about}; {len(section.trace):,} jobs over {section.trace.span:,.0f} s; "
            f"oracle {section.oracle:,.0f} pod-seconds.",
            "",
            markdown_table(section.outcomes, COLUMNS),
            "",
            _verdict(section, compare),
        ]
    return "\n".join(lines) + "\n"


DEFAULT_COMPARE = (STARTUP_AWARE,)
