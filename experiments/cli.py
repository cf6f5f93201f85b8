"""``python -m experiments {replay,generate,tune,keda-sweep,scorecard,record}``.

The ``replay`` options and its ``--json`` document are a stable interface (scripts and checks rely
on them). Mistakes a user can fix (a missing or malformed trace, an unknown policy, an impossible
workload, a number outside its option's range, options that contradict each other or that one
would make void, an output path that cannot be written) end with one
``error:`` line on stderr and exit status 2, never a traceback; an option's mistake names the
option as typed (not a field of the policy's ``WorkloadSpec``) and is found before any run.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from autoscaler.engine.baselines import StaticPolicy
from autoscaler.engine.registry import (
    STARTUP_AWARE,
    PolicySpecError,
    Value,
    format_option,
    make_policy,
    parse_spec,
    starting_point,
    tuning_grid,
)
from autoscaler.engine.snapshot import MAX_SLOTS_PER_POD, Policy
from autoscaler.engine.target import slo_problem
from experiments import keda_sweep, record, scorecard, tune
from experiments.distributions import Distribution, duration
from experiments.generators import SHAPES, AnyShape, generate
from experiments.render import COLUMNS, METRICS, Column, invocation, rich_table
from experiments.replay import SERVICE_FROM_TRACE, Outcome, Setup, prepare, replay
from experiments.sim import MAX_TICKS, ProgressFn, SimulationError, TickLimitError
from experiments.traces import AZURE_CODE_TRACE, AZURE_COLUMNS, Trace, TraceError, load_trace, write_trace
from jobqueue import Settings

if TYPE_CHECKING:
    import redis

EXIT_USAGE = 2
TRACE_HINT = (
    f"--trace needs a CSV with the Azure LLM columns ({','.join(AZURE_COLUMNS)}) "
    "or a 'timestamp[,service_s]' header; `python -m experiments generate poisson > trace.csv` writes one"
)


class UsageError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


# -- numeric flags -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Bounds:
    """The values a numeric flag admits: from ``low`` (excluded when ``open_low``) to ``high``.

    Always finite: NaN fails every comparison, so a check written as ``if x <= 0: fail`` lets it
    through, and infinity passes every lower bound; neither is a setting anyone means.
    """

    low: float
    high: float = math.inf
    open_low: bool = False

    def admits(self, value: float) -> bool:
        if not isinstance(value, int) and not math.isfinite(value):  # ints: no NaN, and may exceed a float
            return False
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def describe(self, integer: bool) -> str:
        if self.high < math.inf:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        above = f"{'>' if self.open_low else '>='} {self.low:g}"
        return above if integer else f"a finite number {above}"


POSITIVE = Bounds(0.0, open_low=True)
NON_NEGATIVE = Bounds(0.0)
COUNT = Bounds(1)


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    bounds: Bounds,
    *,
    group: argparse._ArgumentGroup | None = None,
    **kwargs: Any,
) -> None:
    """Add a numeric option with the range it admits, which :func:`main` checks before any work.

    Declared beside the option so that no numeric option goes unchecked (a NaN or a negative
    count would otherwise surface as a traceback, or a nonsense result, deep inside a long run).
    """
    (group or parser).add_argument(flag, **kwargs)
    declared: dict[str, Bounds] | None = parser.get_default("number_bounds")
    if declared is None:
        declared = {}
        parser.set_defaults(number_bounds=declared)
    declared[flag] = bounds


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option within its declared range, else the usage error naming it."""
    declared: dict[str, Bounds] = getattr(args, "number_bounds", None) or {}
    for flag, bounds in declared.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, int | float) and not bounds.admits(number):
                integer = isinstance(number, int)
                raise UsageError(f"{flag} must be {bounds.describe(integer)}, got {number}")
        if value == []:
            raise UsageError(f"{flag} needs at least one value")


def _duration(mean_flag: str, mean: float, p90_flag: str, p90: float | None) -> Distribution:
    """The duration the two options describe, or the usage error naming both (a p90 must fit its mean)."""
    try:
        return duration(mean, p90)
    except ValueError as exc:
        named = (
            f"{mean_flag} {mean:g}"
            if p90 is None
            else f"{p90_flag} {p90:g} does not fit {mean_flag} {mean:g}"
        )
        raise UsageError(f"{named}: {exc}") from None


# -- shared options ------------------------------------------------------------------------------
def _service(text: str) -> float | str:
    if text == SERVICE_FROM_TRACE:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or {SERVICE_FROM_TRACE!r}, got {text!r}"
        ) from None


def _add_workload(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload and cluster")

    def number(flag: str, bounds: Bounds, **kwargs: Any) -> None:
        _number(parser, flag, bounds, group=group, **kwargs)

    startup = Bounds(0.0, MAX_STARTUP_SECONDS)
    number(
        "--startup",
        startup,
        type=float,
        default=30.0,
        help=f"pod startup seconds (mean), at most {MAX_STARTUP_SECONDS:g} (a day) [30]",
    )
    number("--startup-p90", startup, type=float, help="startup p90: draws lognormal startups")
    number(
        "--service",
        NON_NEGATIVE,
        type=_service,
        help="seconds per job, or 'trace' for its service_s [5]",
    )
    number("--service-p90", NON_NEGATIVE, type=float, help="service p90: draws lognormal service times")
    number("--slo", POSITIVE, type=float, default=10.0, help="latency SLO in seconds [10]")
    number(
        "--tick",
        Bounds(0.0, MAX_TICK_SECONDS, open_low=True),
        type=float,
        default=DEFAULT_TICK_SECONDS,
        help=f"control tick in seconds [{DEFAULT_TICK_SECONDS:g}]",
    )
    number(
        "--watch",
        NON_NEGATIVE,
        type=float,
        help="between ticks, look at the queue this often (less than --tick) and let the policy answer "
        f"a surge; 0: off [{DEFAULT_WATCH_SECONDS:g}; off when --tick <= {DEFAULT_WATCH_SECONDS:g}]",
    )
    number("--slots", Bounds(1, MAX_SLOTS_PER_POD), type=int, default=1, help="job slots per pod [1]")
    number("--initial-replicas", Bounds(0), type=int, default=1, help="warm pods at t=0 [1]")
    number("--min-replicas", Bounds(0), type=int, default=0, help="policy floor [0]")
    number("--max-replicas", COUNT, type=int, default=200, help="policy ceiling [200]")
    # numpy's generators take no negative seed
    number("--seed", Bounds(0), type=int, default=0, help="random seed for drawn durations [0]")


PROCESSES_PER_CPU = 4
"""Replays are CPU-bound: past one process a CPU they only queue, and each forked worker holds the
prepared traces; a few per CPU still allow for a CPU count that undercounts a container's share."""


def _add_processes(parser: argparse.ArgumentParser) -> None:
    """``--processes``, refused above ``PROCESSES_PER_CPU`` per CPU (a typo'd 1000 would fork 1000)."""
    cap = PROCESSES_PER_CPU * (os.cpu_count() or 1)
    _number(
        parser,
        "--processes",
        Bounds(1, cap),
        type=int,
        default=2,
        help=f"replays in parallel, at most {PROCESSES_PER_CPU} per CPU ({cap} here) [2]",
    )


DEFAULT_WATCH_SECONDS = 1.0
"""``--watch`` when not given; a ``--tick`` no longer than it already looks at the queue as often,
so there the watch is off (``--watch 0``) unless typed, and a typed one is refused."""


def _watch(watch: float | None, tick: float) -> float:
    """The watch's interval (0: off), or the usage error naming both flags for one no shorter than the tick.

    The watch looks between ticks, so one of ``--tick`` or more would never look: the simulator
    (as the daemon) turned it off without a word, under a setup that still read "watch N s".
    """
    if watch is None:
        return DEFAULT_WATCH_SECONDS if tick > DEFAULT_WATCH_SECONDS else 0.0
    if watch > 0 and watch >= tick:
        raise UsageError(
            f"--watch {watch:g} is not below --tick {tick:g}: the watch looks between ticks, so it would "
            "never look; pass a --watch below --tick, or --watch 0 to turn it off"
        )
    return watch


def _setup(args: argparse.Namespace) -> Setup:
    setup = Setup(
        startup=args.startup,
        startup_p90=args.startup_p90,
        service=DEFAULT_SERVICE_SECONDS if args.service is None else args.service,
        service_p90=args.service_p90,
        slo=args.slo,
        tick=args.tick,
        watch=_watch(args.watch, args.tick),
        slots=args.slots,
        initial_replicas=args.initial_replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        seed=args.seed,
    )
    # Each option alone is in range (main checks that first); these are the rules between them,
    # named by the options typed rather than by the policy's WorkloadSpec fields.
    _duration("--startup", setup.startup, "--startup-p90", setup.startup_p90)
    if setup.service != SERVICE_FROM_TRACE:
        _duration("--service", float(setup.service), "--service-p90", setup.service_p90)
        problem = slo_problem(setup.slo, float(setup.service), slo_name="--slo", service_name="--service")
        if problem is not None:
            raise UsageError(problem)
    elif setup.service_p90 is not None:  # the trace's own times are replayed as they are
        raise UsageError(
            f"--service-p90 spreads a drawn --service time, but --service {SERVICE_FROM_TRACE} "
            "replays the trace's own service_s: drop one of them"
        )
    for flag, count in (
        ("--min-replicas", setup.min_replicas),
        ("--initial-replicas", setup.initial_replicas),
    ):
        if count > setup.max_replicas:
            raise UsageError(f"{flag} {count} is above --max-replicas {setup.max_replicas}")
    try:  # a rule of WorkloadSpec's that the checks above do not know yet
        setup.nominal_workload()
    except ValueError as exc:
        raise UsageError(f"bad workload options: {exc}") from None
    return setup


DEFAULT_TICK_SECONDS = 5.0

DEFAULT_SERVICE_SECONDS = 5.0
"""``--service`` when not given: the reference model's 5 s per job."""

MAX_TICK_SECONDS = 3600.0
"""Longest control tick: beyond it there is no control loop to speak of, and the watch between
ticks (every ``--watch`` seconds) would spin for as long as one tick lasts."""

MAX_STARTUP_SECONDS = 86400.0
"""Longest pod startup ``--startup`` and ``--startup-p90`` admit: a day. Warm-ups take seconds to
minutes, an hour for the largest images. Unbounded, ``--startup 1e308`` overflowed the oracle's
bill (a startup for every level of the pod profile) to infinity, which no JSON can hold."""

MAX_LOOKS = MAX_TICKS * round(DEFAULT_TICK_SECONDS / DEFAULT_WATCH_SECONDS)
"""Watch looks one replay may take: as many as ``MAX_TICKS`` ticks take at the default tick and
watch (one look a second). A look is cheaper than a tick, but a ``--watch`` of a microsecond made
3.6 billion of them in an hour of trace."""


def _trace(path: str, setup: Setup) -> Trace:
    try:
        trace = load_trace(path)
    except TraceError as exc:
        raise UsageError(f"{exc}. {TRACE_HINT}") from None
    _check_length(trace, setup, path)
    return trace


def _least_seconds(trace: Trace, setup: Setup) -> float:
    """Seconds a replay of ``trace`` simulates at the least: until its last job could have finished.

    Ticks run until every job is done, and no job is done before its arrival plus its service time
    (the draws :func:`~experiments.replay.prepare` makes, from the same seed). The arrivals' span
    alone said 0 s for a trace of one job, or of jobs that all arrive at once, however tiny the tick.
    """
    if setup.service == SERVICE_FROM_TRACE and trace.service is None:
        return trace.span  # refused by _service_column, naming the option that brought it in
    return float(np.max(trace.arrivals + setup.service_times(trace)))


def _many(count: float) -> str:
    """A count (of ticks, looks, days, seconds) for a message: digits while they can be read, then
    powers of ten (a trace spanning 1e300 s printed 300 digits twice)."""
    if not math.isfinite(count):  # a quotient past the float range
        return "more than 1e+308"
    return f"{count:,.0f}" if count < 1e15 else f"{count:.3g}"


def _at_least(value: float) -> str:
    """``value`` rounded up to two significant digits, for a message's "pass at least": with a
    little headroom, so that the number printed passes the check it is the answer to."""
    value *= 1 + 1e-9
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / step) * step:.2g}"


def _check_length(trace: Trace, setup: Setup, source: str) -> None:
    """Refuse before any run a replay that would take more than ``MAX_TICKS`` ticks or ``MAX_LOOKS``
    watch looks, naming what is out of proportion: the trace, ``--tick`` or ``--watch``.

    Counted over :func:`_least_seconds`, not over the arrivals' span: with ``--tick 1e-300`` a
    one-job trace spanned 0 ticks, passed, and the replay then ticked through its job's 5 s
    without end. A trace too long even at the default tick is the trace's fault (mixed units or
    origins, most likely); within that, service times too long even at the longest tick are the
    service's, and a tick or watch too short for the rest is the option's.
    """
    least = _least_seconds(trace, setup)
    # The replay ticks at 0, tick, 2 tick, ... up to ``least``: one more tick than least / tick
    # (a trace of exactly MAX_TICKS ticks passed here, ran the whole limit, then stopped). Infinity
    # past the float range is refused like any count too large.
    room = MAX_TICKS - 1  # tick lengths after the first tick
    ticks = least / setup.tick + 1
    if ticks > MAX_TICKS and trace.span > room * DEFAULT_TICK_SECONDS:
        gaps = np.diff(trace.arrivals)
        at = int(np.argmax(gaps))
        raise UsageError(
            f"{source}: the trace spans {_many(trace.span / 86400)} days, {_many(ticks)} ticks of "
            f"{setup.tick:g} s to simulate (at most {MAX_TICKS:,}); its largest gap is "
            f"{_many(gaps[at])} s, after job {at + 1}: are its timestamps all in one unit and origin?"
        )
    simulated = f"replaying it simulates at least {least:,.6g} s (to its last job's arrival plus service)"
    # No --tick would do: the arrivals span at most MAX_TICKS default ticks, so the service is too long.
    if ticks > MAX_TICKS and least / room > MAX_TICK_SECONDS:
        raise UsageError(
            f"{_service_too_long(setup, source)}: {simulated}, "
            f"{_many(least / MAX_TICK_SECONDS + 1)} ticks even at the longest --tick, {MAX_TICK_SECONDS:g} s "
            f"(at most {MAX_TICKS:,}): are the service times in seconds?"
        )
    if ticks > MAX_TICKS:
        advice = _at_least(least / room)  # its headroom may round past the longest tick
        raise UsageError(
            f"--tick {setup.tick:g} is too short for {source}: {simulated}, {_many(ticks)} ticks "
            f"(at most {MAX_TICKS:,}); pass a --tick of at least "
            f"{advice if float(advice) <= MAX_TICK_SECONDS else f'{MAX_TICK_SECONDS:g}'}"
        )
    looks = least / setup.watch if setup.watch > 0 else 0.0
    if looks > MAX_LOOKS:
        raise UsageError(
            f"--watch {setup.watch:g} is too short for {source}: replaying it simulates at least "
            f"{least:,.6g} s, {_many(looks)} looks (at most {MAX_LOOKS:,}); pass a --watch of at "
            f"least {_at_least(least / MAX_LOOKS)}, or --watch 0 to turn it off"
        )


def _tick_limit_advice(exc: TickLimitError) -> str:
    """What to change when a replay ran into the tick limit after :func:`_check_length` let it in.

    That check counts the least the trace needs; jobs queueing behind too few pods can still make
    the replay longer. A longer ``--tick`` is the answer unless it is at the longest already.
    """
    if exc.looks:
        return f"--watch {exc.watch_seconds:g} is too short: {exc}; pass a longer --watch"
    if exc.tick_seconds >= MAX_TICK_SECONDS:
        return (
            f"{exc}: even at the longest --tick, {MAX_TICK_SECONDS:g} s, the jobs queue for longer than "
            "that many ticks: replay fewer jobs, or give the policy more pods"
        )
    return f"--tick {exc.tick_seconds:g} is too short: {exc}; pass a longer --tick"


def _service_too_long(setup: Setup, source: str) -> str:
    """Says that the replayed service times are too long, naming where they come from."""
    if setup.service == SERVICE_FROM_TRACE:
        return f"the service_s of {source} (--service {SERVICE_FROM_TRACE}) are too long"
    spread = "" if setup.service_p90 is None else f" with --service-p90 {setup.service_p90:g}"
    return f"--service {float(setup.service):g}{spread} is too long for {source}"


def _service_column(setup: Setup, traces: Sequence[tuple[Trace, str]], service_given: bool) -> None:
    """``--service trace`` needs each trace's service_s column: refused before any run, naming the
    option that brought in a trace without one (a replay found it only when it reached that trace).

    Without ``--service``, a trace that has the column is replayed at the default 5 s a job, as the
    CLI always did; a note on stderr says so. A recording (``experiments record``) has the column,
    and tuning one without ``--service trace`` scored every job at 5 s: 96.9 % within the SLO for
    traffic whose own 8 s jobs give 76.4 %, with nothing to tell the two apart.
    """
    if setup.service != SERVICE_FROM_TRACE:
        if not service_given:
            for trace, option in traces:
                if trace.service is not None:
                    _console(stderr=True).print(
                        f"note: {option} has a service_s column, replayed at --service "
                        f"{float(setup.service):g} s a job; pass --service {SERVICE_FROM_TRACE} "
                        "to replay its own times"
                    )
        return
    for trace, option in traces:
        if trace.service is None:
            raise UsageError(_no_service_column(f"{option} has no service_s column"))
        # As --service is checked against --slo: times in milliseconds (5000 for 5 s) replayed to
        # 0 % within the SLO and the maximum of pods for a handful of jobs, exit 0.
        median = float(np.median(trace.service))
        problem = slo_problem(
            setup.slo, median, slo_name="--slo", service_name=f"the median service_s of {option}"
        )
        if problem is not None:
            raise UsageError(f"{problem} (service_s is in seconds: divide milliseconds by 1000)")


def _no_service_column(why: str) -> str:
    return (
        f"--service {SERVICE_FROM_TRACE} replays each trace's own service_s, but {why}: "
        "pass --service SECONDS"
    )


def _check_policies(specs: Sequence[str], setup: Setup, option: str = "--policy") -> None:
    """Every spec builds a policy (else its own error), and no ``static:N`` is outside the bounds."""
    workload = setup.nominal_workload()
    for spec in specs:
        _within_bounds(make_policy(spec, workload), f"{option} {spec}", setup)


def _within_bounds(policy: Policy, named: str, setup: Setup) -> None:
    """Refuse a static pool outside ``--min-replicas``..``--max-replicas``, as ``--initial-replicas``
    above the ceiling is.

    The simulator bounds every decision as the daemon does, so ``static:300`` under the default
    ceiling of 200 ran 200 pods and was reported as "static:300", and ``static:5`` over a floor of
    10 ran 10.
    """
    if isinstance(policy, StaticPolicy):
        if policy.replicas > setup.max_replicas:
            raise UsageError(_above_ceiling(named, setup))
        if policy.replicas < setup.min_replicas:
            raise UsageError(_below_floor(named, setup))


def _above_ceiling(named: str, setup: Setup) -> str:
    return f"{named} is above --max-replicas {setup.max_replicas}"


def _below_floor(named: str, setup: Setup) -> str:
    return (
        f"{named} is below --min-replicas {setup.min_replicas}: the floor would run more pods than it names"
    )


def _static_sizes(
    spec: str, grid: dict[str, list[Value]], requested: dict[str, list[str]], setup: Setup
) -> None:
    """``static:N``'s pool sizes to tune, none above ``--max-replicas``.

    The spec's N and the sizes typed with ``--grid n=`` are refused above it, like ``--policy``'s;
    the default candidates above it are left out (each would replay the ceiling's pods as N).
    """
    if parse_spec(spec)[0] != "static":
        return
    _check_policies([spec], setup)
    above = [n for n in grid["n"] if isinstance(n, int) and n > setup.max_replicas]
    below = [n for n in grid["n"] if isinstance(n, int) and n < setup.min_replicas]
    if any(_knob_key(knob) == "n" for knob in requested):  # then the grid holds only those and N
        if above:
            raise UsageError(_above_ceiling(f"--grid n={','.join(map(str, above))}", setup))
        if below:
            raise UsageError(_below_floor(f"--grid n={','.join(map(str, below))}", setup))
    else:
        grid["n"] = [n for n in grid["n"] if n not in above and n not in below]


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], ProgressFn | None]]:
    """Per-run progress callbacks drawing one bar per run on stderr (or none when disabled)."""
    if not enabled:
        yield lambda _label: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )

    def for_run(label: str) -> ProgressFn:
        task = bar.add_task(label, total=1)
        return lambda done, total: bar.update(task, completed=done, total=total)

    with bar:
        yield for_run


def _console(*, stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a file or pipe."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 1000)


# -- replay --------------------------------------------------------------------------------------
def _outputs_writable(json_path: str | None, plot_dir: str | None) -> None:
    """Fail before the replay, not after it, when ``--json`` or ``--plot`` cannot be written.

    Otherwise a long replay's results end in a traceback and are lost.
    """
    if json_path and json_path != "-":
        _file_writable("--json", Path(json_path))
    if plot_dir:
        with _writing("--plot", Path(plot_dir)):
            _make_dir(Path(plot_dir))


def _file_writable(option: str, target: Path) -> None:
    """Fail before the work, not after it, when the file ``option`` names cannot be written there.

    Creates its directory (as writing it would); a directory or a file in the way, or a directory
    without write permission, is the usage error naming ``option``.
    """
    with _writing(option, target):
        _make_dir(target.parent)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not os.access(target if target.exists() else target.parent, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def _make_dir(path: Path) -> None:
    """``mkdir -p``, saying "not a directory" (not "file exists") when a file is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None


@contextmanager
def _writing(option: str, path: Path) -> Iterator[None]:
    """An ``OSError`` while writing ``path`` as the one-line usage error naming ``option``."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def cmd_replay(args: argparse.Namespace) -> int:
    setup = _setup(args)
    trace = _trace(args.trace, setup)
    _service_column(setup, [(trace, f"--trace {args.trace}")], args.service is not None)
    specs = args.policy or [STARTUP_AWARE, "keda"]
    _check_policies(specs, setup)
    _outputs_writable(args.json, args.plot)
    to_stdout = args.json == "-"
    show_progress = not to_stdout and sys.stderr.isatty() and len(trace) >= 50_000
    with _progress(show_progress) as progress_for:
        report = replay(trace, setup, specs, progress_for)
    document = report.as_json()
    notes = _console(stderr=to_stdout)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"  # strict JSON: NaN is no number
    if to_stdout:
        sys.stdout.write(text)
    else:
        title = f"{trace.name}: {len(trace):,} jobs, oracle {report.prepared.oracle:,.0f} pod-seconds"
        notes.print(rich_table(report.outcomes, title, COLUMNS))
        notes.print(f"[dim]{setup.describe()}[/dim]", highlight=False)
        if args.json:
            with _writing("--json", Path(args.json)):
                Path(args.json).write_text(text, encoding="utf-8")
            notes.print(f"wrote {args.json}")
    if args.plot:
        from experiments.plots import plot_report  # matplotlib only when asked for

        with _writing("--plot", Path(args.plot)):
            written = plot_report(report, Path(args.plot))
        for path in written:
            notes.print(f"wrote {path}")
    return 0


# -- generate ------------------------------------------------------------------------------------
MAX_GENERATED_JOBS = 50_000_000
"""Arrivals ``generate`` may draw (the peak rate times ``--duration``; thinning draws that many
before keeping each with probability rate/peak). 50 times the replay benchmark's 1,000,000-job
trace, about 30 s and 6 GB; far above, the arrays and the CSV text outgrow memory and end in a
MemoryError after minutes, so such a shape is refused before any drawing."""


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_shape(shape: AnyShape) -> None:
    """Refuse a shape whose options contradict each other or ask for more than a trace may hold."""
    fields = dataclasses.fields(shape)
    for f in fields:
        at = getattr(shape, f.name)
        if f.metadata.get("starts") and at >= shape.duration:  # the rest of its options would do nothing
            raise UsageError(
                f"{_flag(f.name)} {at:g} is not before --duration {shape.duration:g}: the trace "
                f"would end before {f.metadata['starts']}"
            )
    expected = shape.peak * shape.duration
    if expected > MAX_GENERATED_JOBS:
        peak = [f"{_flag(f.name)} {getattr(shape, f.name):g}" for f in fields if f.metadata.get("peak")]
        raise UsageError(
            f"{' '.join(peak)} and --duration {shape.duration:g} draw about {expected:,.0f} arrivals "
            f"(peak {shape.peak:g} jobs/s for {shape.duration:g} s), above the {MAX_GENERATED_JOBS:,} "
            "a generated trace may have: lower the rate or --duration"
        )


def cmd_generate(args: argparse.Namespace) -> int:
    shape_cls = SHAPES[args.kind]
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(shape_cls)}
    if args.service_p90 is not None and args.service_mean is None:
        raise UsageError("--service-p90 spreads the service times of --service-mean, which is not given")
    try:
        shape = shape_cls(**values)
        _check_shape(shape)
        service = (
            None
            if args.service_mean is None
            else _duration("--service-mean", args.service_mean, "--service-p90", args.service_p90)
        )
        arrivals, service_times = generate(shape, seed=args.seed, service=service)
    except ValueError as exc:
        raise UsageError(f"bad {args.kind} options: {exc}") from None
    text = write_trace(None, arrivals, service_times)
    if args.out:
        with _writing("--out", Path(args.out)):
            Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("generate", help="write a synthetic trace (generic CSV) to stdout")
    kinds = gen.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, shape_cls in SHAPES.items():
        doc = (shape_cls.__doc__ or "").strip()
        parser = kinds.add_parser(
            kind,
            help=doc,
            description=doc,
            epilog=f"At most {MAX_GENERATED_JOBS:,} arrivals: the peak rate times --duration may be no more.",
        )
        for f in dataclasses.fields(shape_cls):
            _number(
                parser,
                _flag(f.name),
                Bounds(0.0, f.metadata.get("at_most", math.inf), open_low=f.metadata.get("positive", False)),
                dest=f.name,
                type=float,
                default=f.default,
                help=f"{f.metadata.get('help', '')} [{f.default:g}]",
            )
        _number(parser, "--seed", Bounds(0), type=int, default=0, help="random seed [0]")
        _number(
            parser,
            "--service-mean",
            NON_NEGATIVE,
            type=float,
            help="also write a service_s column, this mean",
        )
        _number(
            parser,
            "--service-p90",
            NON_NEGATIVE,
            type=float,
            help="service p90 (lognormal) for --service-mean, which it needs",
        )
        parser.add_argument("--out", help="write here instead of stdout")
        parser.set_defaults(handler=cmd_generate)


# -- tune ----------------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    setup = _setup(args)
    requested = _grid(args.grid or [])
    floors = _floors(requested, setup)
    grid: dict[str, list[Value]] = tuning_grid(args.policy, requested)  # before reading any trace
    _static_sizes(args.policy, grid, requested, setup)
    start = starting_point(args.policy, grid)
    workload = setup.nominal_workload()
    for point in tune.grid_points(grid):  # every value must build a policy before any replay starts
        make_policy(args.policy, workload, **point)
    traces = [_trace(path, setup) for path in args.trace]
    _service_column(
        setup,
        [(trace, f"--trace {path}") for trace, path in zip(traces, args.trace, strict=True)],
        args.service is not None,
    )
    prepared = [prepare(trace, setup) for trace in traces]
    if floors is not None:  # named: crossed with every knob
        given, auto = floors
        suggested = tune.suggest_floors(prepared, args.target_attainment) if auto else []
        grid[tune.FLOOR] = [*sorted({*given, *suggested})]
    points = tune.grid_points(grid)
    if floors is None and parse_spec(args.policy)[0] != "static":  # a floor under static:N is more N
        suggested = tune.suggest_floors(prepared, args.target_attainment)
        points = tune.with_floor_points(points, start, suggested, setup.min_replicas)
    if tune.FLOOR in points[0]:
        start[tune.FLOOR] = setup.min_replicas
    console = _console()
    err = _console(stderr=True)
    names = ", ".join(trace.name for trace in traces)
    err.print(f"tuning {args.policy} on {names}: {len(points)} grid points, {args.processes} processes")
    with _progress(sys.stderr.isatty()) as progress_for:
        tick = progress_for(f"{len(points)} replays")
        count = 0

        def on_result(_trial: tune.Trial) -> None:
            nonlocal count
            count += 1
            if tick:
                tick(count, len(points))

        trials = tune.run_grid(prepared, args.policy, points, args.processes, on_result)
    front = tune.pareto_front(trials)
    title = f"Pareto front (cost vs SLO attainment), {len(front)} of {len(trials)} grid points"
    knobs: list[Column[tune.Trial]] = [(k, _knob(k)) for k in points[0]]
    metrics: list[Column[tune.Trial]] = [(h, _of_outcome(cell)) for h, cell in METRICS]
    if len(traces) > 1:  # all traces' jobs together, then the trace a recommendation must also meet
        metrics.insert(1, ("worst trace", lambda trial: f"{trial.worst_attainment:.1%}"))
    console.print(rich_table(front, title, [*knobs, *metrics]))
    starting = next((t for t in trials if t.options == start), None)
    if starting is not None:  # always a grid point (tuning_grid adds it); guarded all the same
        console.print(_starting_row(starting, front), soft_wrap=True)
    best, met = tune.recommend(trials, args.target_attainment)
    console.print("\nRecommended config:\n")
    sys.stdout.write(tune.yaml_snippet(args.policy, best, prepared, args.target_attainment, met))
    return 0


def _grid(options: Sequence[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """The ``--grid`` options by knob; a knob given twice is refused (a dict keeps only the last).

    ``listLength`` and ``list_length`` are one knob, as the registry reads them.
    """
    grid: dict[str, list[str]] = {}
    typed: dict[str, str] = {}
    for knob, values in options:
        key = _knob_key(knob)
        if key in typed:
            raise UsageError(
                f"--grid {knob} repeats --grid {typed[key]}: list all its values in one --grid {knob}=V1,V2"
            )
        typed[key] = knob
        grid[knob] = values
    return grid


def _knob_key(knob: str) -> str:
    """The knob's name as the registry reads it: ``listLength`` is ``list_length``."""
    _, _, named = parse_spec(f"grid:{knob}=")
    return next(iter(named), knob)


def _floors(grid: dict[str, list[str]], setup: Setup) -> tuple[set[int], bool] | None:
    """Take the floor (``min_replicas``) out of ``--grid``: its values with ``--min-replicas``'s,
    and whether ``auto`` asks for the floors the traces suggest (:func:`tune.suggest_floors`).

    The floor is the target's field, not the policy's, so the registry does not know it; each
    value must be a whole number of pods the replay's ``--max-replicas`` allows.
    """
    knob = next((k for k in grid if _knob_key(k) == tune.FLOOR), None)
    if knob is None:
        return None
    floors, auto = {setup.min_replicas}, False
    for text in grid.pop(knob):
        if text == "auto":
            auto = True
            continue
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"--grid {knob}: {text!r} is not a whole number of pods, nor 'auto'") from None
        if not 0 <= value <= setup.max_replicas:
            raise UsageError(f"--grid {knob}: {value} is outside 0..--max-replicas ({setup.max_replicas})")
        floors.add(value)
    return floors, auto


def _grid_option(text: str) -> tuple[str, list[str]]:
    """``--grid knob=v1,v2,...`` as (knob, values); the registry checks the knob and values."""
    knob, sep, values = text.partition("=")
    listed = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not knob.strip() or not listed:
        raise argparse.ArgumentTypeError(f"expected KNOB=VALUE[,VALUE...], got {text!r}")
    return knob.strip(), listed


def _starting_row(trial: tune.Trial, front: Sequence[tune.Trial]) -> str:
    """Where the configuration the user started from stands against the front."""
    o = trial.outcome
    where = (
        "on the front"
        if any(t is trial for t in front)
        else "off the front: a point on it is cheaper at equal or better attainment"
    )
    return (
        f"Starting config ({', '.join(f'{k}={format_option(v)}' for k, v in trial.options.items())}): "
        f"{o.slo_attainment:.1%} within SLO at {o.cost_vs_oracle:.2f}x oracle, {where}"
    )


def _knob(name: str) -> Callable[[tune.Trial], str]:
    return lambda trial: format_option(trial.options[name])


def _of_outcome(cell: Callable[[Outcome], str]) -> Callable[[tune.Trial], str]:
    return lambda trial: cell(trial.outcome)


# -- keda-sweep ----------------------------------------------------------------------------------
def cmd_keda_sweep(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if not args.trace and not args.synthetic:
        raise UsageError("keda-sweep needs at least one --trace PATH or --synthetic NAME")
    if setup.service == SERVICE_FROM_TRACE and args.synthetic:  # generated without service times
        raise UsageError(_no_service_column(f"--synthetic {args.synthetic[0]} has no service_s column"))
    # Checked by name before any run: a typo is a usage error, not a note after an hour of replays.
    compare = list(args.compare or [STARTUP_AWARE])
    _check_policies(compare, setup, "--compare")
    traces = [(_trace(path, setup), f"trace file `{Path(path).name}`") for path in args.trace or []]
    _service_column(
        setup,
        [(trace, f"--trace {path}") for (trace, _), path in zip(traces, args.trace or [], strict=True)],
        args.service is not None,
    )
    try:
        synthetic = [keda_sweep.synthetic_trace(name, args.seed) for name in args.synthetic or []]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for (trace, _), name in zip(synthetic, args.synthetic or [], strict=True):
        _check_length(trace, setup, f"--synthetic {name}")
    traces += synthetic
    out = Path(args.out)
    _file_writable("--out", out)
    err = _console(stderr=True)
    sections = []
    for trace, about in traces:
        err.print(f"sweeping {trace.name} ({len(trace):,} jobs)")
        sections.append(
            keda_sweep.sweep_trace(
                trace, about, setup, compare, list_lengths=args.list_lengths, processes=args.processes
            )
        )
    text = keda_sweep.render(sections, setup, compare)
    with _writing("--out", out):
        out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    err.print(f"wrote {out}")
    return 0


# -- scorecard -----------------------------------------------------------------------------------
def cmd_scorecard(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if setup.service == SERVICE_FROM_TRACE:  # found at the first such trace, after the real ones ran
        raise UsageError(_no_service_column("the scorecard's synthetic traces have no service_s column"))
    azure = Path(args.azure_trace) if args.azure_trace else None
    if azure is not None and not azure.exists():  # shipped in traces/: a typo'd path, not a missing download
        raise UsageError(f"--azure-trace {azure} not found: pass the path of azure_llm_code_2023.csv")
    conv = Path(args.conv_trace) if args.conv_trace else None
    if conv is not None and not conv.exists():
        raise UsageError(
            f"--conv-trace {conv} not found: download AzureLLMInferenceTrace_conv.csv from the "
            "Azure/AzurePublicDataset repository on GitHub (data/)"
        )
    _check_policies(args.policy or [], setup)  # the defaults are the report's reference rows
    out = Path(args.out)
    _file_writable("--out", out)
    traces = scorecard.reference_traces(azure, args.seed, conv)
    for trace, _ in traces:
        _check_length(trace, setup, f"the scorecard's trace {trace.name}")
    policies = args.policy or scorecard.default_policies(setup.min_replicas, setup.max_replicas)
    if scorecard.REFERENCE_STATIC not in policies and not args.policy:
        _console(stderr=True).print(
            f"note: {scorecard.REFERENCE_STATIC} is outside --min-replicas {setup.min_replicas}.."
            f"--max-replicas {setup.max_replicas}; its column is left empty"
        )
    rows = scorecard.score_traces(traces, setup, policies)
    text = scorecard.render(rows, setup, invocation())
    with _writing("--out", out):
        out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# -- record --------------------------------------------------------------------------------------
def _record_queue(client: redis.Redis, queue: str | None, settings: Settings) -> str:
    """The queue asked for, else the only one there is (a choice between several is the user's)."""
    from jobqueue import sync as jq

    if queue:
        return queue
    queues = jq.list_queues(client, settings=settings)
    if len(queues) != 1:
        found = ", ".join(queues) if queues else "none"
        raise UsageError(f"pass --queue: the server has {len(queues)} queue(s) ({found})")
    return queues[0]


def cmd_record(args: argparse.Namespace) -> int:
    # Imported here: redis-py costs a replay 0.3 s of start-up, and only `record` talks to a server.
    import redis

    from jobqueue.binding import bind_sync
    from jobqueue.records import scan_job_times
    from jobqueue.redis_url import redact, url_problem

    settings = Settings(prefix=args.prefix)
    try:
        since = None if args.since is None else record.parse_since(args.since, time.time())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.out:
        _file_writable("--out", Path(args.out))
    # No scheme, another scheme, a port that is no number or 0, an option no connection takes, a
    # password whose / or ? ends the host: judged as the API, the worker and the demo judge it.
    if (problem := url_problem(args.redis_url)) is not None:
        raise UsageError(f"--redis-url {problem}")
    client = redis.Redis.from_url(args.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        queue = _record_queue(client, args.queue, settings)
        jobs = bind_sync(scan_job_times)(client, queue, since=since, settings=settings)
    except redis.RedisError as exc:
        raise UsageError(f"cannot read {redact(args.redis_url)}: {exc}") from None
    finally:
        client.close()
    recorded = record.recording(jobs, queue, args.speedup)
    err = _console(stderr=True)
    err.print(recorded.describe(), highlight=False)
    if not len(recorded):
        raise UsageError(f"nothing to export from queue {queue} (records expire RESULT_TTL after a job ends)")
    origin = datetime.fromtimestamp(recorded.origin, UTC).isoformat(timespec="milliseconds")
    err.print(f"timestamp 0 = {origin}; times x{args.speedup:g}", highlight=False)
    text = write_trace(None, recorded.arrivals, recorded.service)
    if args.out:
        with _writing("--out", Path(args.out)):
            Path(args.out).write_text(text, encoding="utf-8")
        err.print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _add_record(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = sub.add_parser(
        "record",
        help="export the arrivals (and service times) a live queue saw as a generic trace CSV",
        description=record.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rec.add_argument("--redis-url", required=True, help="redis://host:port/db of the API and workers")
    rec.add_argument("--queue", help="model:version queue [the only queue on the server]")
    rec.add_argument("--since", help="only jobs submitted since: 15m, 2h, 1d ago, epoch seconds or ISO time")
    rec.add_argument("--prefix", default="jq", help="key prefix (the API's KEY_PREFIX) [jq]")
    _number(
        rec,
        "--speedup",
        POSITIVE,
        type=float,
        default=1.0,
        help="multiply times by this (a time-compressed demo) [1]",
    )
    rec.add_argument("--out", help="write here instead of stdout")
    rec.set_defaults(handler=cmd_record)


# -- entry point ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("replay", help="replay a trace under policies; table, JSON and plots")
    rep.add_argument("--trace", required=True, help="trace CSV (Azure LLM or generic)")
    rep.add_argument(
        "--policy",
        action="append",
        help="policy spec, repeatable: startup-aware[:k=v], keda[:listLength=N], kpa[:k=v], "
        "static:N (N <= --max-replicas) [startup-aware and keda]",
    )
    rep.add_argument("--json", metavar="PATH|-", help="write the results as JSON ('-' = only JSON on stdout)")
    rep.add_argument("--plot", metavar="DIR", help="write replicas.png and latency_cdf.png here")
    _add_workload(rep)
    rep.set_defaults(handler=cmd_replay)

    _add_generate(sub)

    tun = sub.add_parser("tune", help="grid-search a policy's knobs; Pareto front + recommended config")
    tun.add_argument(
        "--trace",
        required=True,
        action="append",
        help="trace CSV (Azure LLM or generic); repeat to tune one config for several, scored together",
    )
    tun.add_argument("--policy", default=STARTUP_AWARE, help="policy spec to tune [startup-aware]")
    _number(
        tun,
        "--target-attainment",
        Bounds(0.0, 1.0, open_low=True),
        type=float,
        default=0.99,
        help="SLO attainment to meet [0.99]",
    )
    _add_processes(tun)
    tun.add_argument(
        "--grid",
        type=_grid_option,
        action="append",
        metavar="KNOB=V1,V2",
        help="search these values of KNOB instead of its default candidates (repeatable, once a knob; any "
        "config field, 'none' unsets an optional one); the --policy values are always searched too. "
        "min_replicas is the pool's floor, the lever for traffic whose bursts end before a warm-up "
        "does: by default the floors the traces suggest are tried with the --policy values; named "
        "here, its values (with --min-replicas's; auto: the suggested ones) are crossed with every knob",
    )
    _add_workload(tun)
    tun.set_defaults(handler=cmd_tune)

    swp = sub.add_parser("keda-sweep", help="sweep KEDA listLength beside startup-aware; Markdown report")
    swp.add_argument("--trace", action="append", help="trace CSV, repeatable")
    swp.add_argument(
        "--synthetic",
        action="append",
        help=f"named synthetic trace, repeatable: {', '.join(keda_sweep.SYNTHETIC)}",
    )
    _number(
        swp,
        "--list-lengths",
        POSITIVE,
        type=_floats,
        default=list(keda_sweep.LIST_LENGTHS),
        help="comma-separated listLength values [1,2,5,10,20,50]",
    )
    swp.add_argument("--compare", action="append", help="policy spec to put beside KEDA [startup-aware]")
    swp.add_argument("--out", default="reports/keda_sweep.md", help="Markdown report path")
    _add_processes(swp)
    _add_workload(swp)
    swp.set_defaults(handler=cmd_keda_sweep)

    card = sub.add_parser("scorecard", help="every policy on the reference traces vs the targets; Markdown")
    card.add_argument(
        "--azure-trace",
        default=str(AZURE_CODE_TRACE),
        help="the real Azure trace [traces/azure_llm_code_2023.csv]",
    )
    card.add_argument(
        "--conv-trace",
        help="also score the Azure LLM conversation trace (AzureLLMInferenceTrace_conv.csv) [off]",
    )
    card.add_argument(
        "--policy", action="append", help=f"policy spec, repeatable [{', '.join(scorecard.POLICIES)}]"
    )
    card.add_argument("--out", default="reports/scorecard.md", help="Markdown report path")
    _add_workload(card)
    card.set_defaults(handler=cmd_scorecard)

    _add_record(sub)
    return parser


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        _check_numbers(args)
        return handler(args)
    except (UsageError, PolicySpecError, TraceError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except TickLimitError as exc:  # found running, past what _check_length can foresee
        _fail(_tick_limit_advice(exc), EXIT_USAGE)
    except SimulationError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:  # `... | head` closed stdout; nothing left to say
        return 0
