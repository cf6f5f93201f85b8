"""``python -m autoscaler demo``: the whole system on this machine, replaying a real trace.

Runs a real Valkey server (or uses ``REDIS_URL``), the real job API (``python -m api``), and the
autoscaler daemon with the local target, which runs real ``python -m worker`` processes; replays a
window of a trace against the API over HTTP with time compressed by ``--speedup`` (warm-up, service
time, tick, SLO and the policy's windows all shrink by the same factor); then reads the traffic back
from Redis and replays it in the simulator under KEDA and startup-aware for comparison.

Exit status: 0 when every job sent was accepted and succeeded; 1 when some did not (or the run
failed); 2 for a problem the user can fix (one ``error:`` line); 130 when interrupted. Ctrl-C or
SIGTERM stop the API, drain the workers and stop the server: nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import redis
import redis.asyncio
from rich.console import Console
from rich.logging import RichHandler

from autoscaler.demo import report
from autoscaler.demo.monitor import Monitor
from autoscaler.demo.plan import TIME_KNOBS, Plan, Traffic, run_queue, select_traffic
from autoscaler.demo.stack import DemoError, Stack
from autoscaler.demo.traffic import Ledger, follow, play, reraise_lost_cancel
from autoscaler.demo.view import View, status_of
from autoscaler.engine.registry import STARTUP_AWARE
from experiments.render import COLUMNS, rich_table
from experiments.traces import AZURE_CODE_TRACE, TraceError, load_trace, write_trace
from jobqueue.binding import bind_sync
from jobqueue.errors import describe
from jobqueue.records import scan_job_times
from jobqueue.redis_url import redact

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
WARM_UP_GRACE_WALL = 60.0
"""Wall seconds allowed on top of the model's warm-up for the first worker (imports on a busy box)."""

log = logging.getLogger("autoscaler.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaler demo",
        description="Run Valkey, the API, the autoscaler and real workers locally; replay a trace over "
        "HTTP, time-compressed; compare with KEDA and startup-aware on the recorded traffic.",
    )
    parser.add_argument(
        "--trace",
        default=str(AZURE_CODE_TRACE),
        help="trace CSV, Azure LLM or generic [traces/azure_llm_code_2023.csv]",
    )
    parser.add_argument(
        "--speedup", type=float, default=10.0, help="run this many times faster than real time, 1/60..50 [10]"
    )
    parser.add_argument("--start", type=float, default=0.0, help="trace second the window starts at [0]")
    parser.add_argument("--duration", type=float, default=1200.0, help="trace seconds to replay [1200]")
    parser.add_argument(
        "--keep-every", type=int, help="submit every K-th job of the window [auto: what max workers serve]"
    )
    parser.add_argument("--max-workers", type=int, default=16, help="worker processes at most [16]")
    parser.add_argument(
        "--policy",
        default=STARTUP_AWARE,
        help=f"live policy: {', '.join(TIME_KNOBS)}, optionally :knob=value,... [%(default)s]",
    )
    parser.add_argument("--report", metavar="PATH", help="write the final numbers as JSON")
    parser.add_argument(
        "--out", default="out/demo", help="directory for the plots, the recorded trace and logs [out/demo]"
    )
    parser.add_argument("--api-port", type=int, default=0, help="API port [0: any free port]")
    parser.add_argument("--metrics-port", type=int, default=0, help="autoscaler /metrics port [0: any free]")
    return parser


@dataclass(frozen=True, slots=True)
class Options:
    plan: Plan
    traffic: Traffic
    out: Path
    report: Path | None
    api_port: int
    metrics_port: int


def options(args: argparse.Namespace) -> Options:
    """Everything checked before anything starts; a :class:`DemoError` names what to fix."""
    try:
        plan = Plan(speedup=args.speedup, max_workers=args.max_workers, policy=args.policy, queue=run_queue())
        plan.policy_knobs()  # a bad knob fails here, not in the daemon
        trace = load_trace(args.trace)
        traffic = select_traffic(trace, plan, args.start, args.duration, args.keep_every)
    except TraceError as exc:
        raise DemoError(
            f"{exc}; pass --trace with an Azure LLM CSV or a 'timestamp[,service_s]' CSV"
        ) from None
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    for port, flag in ((args.api_port, "--api-port"), (args.metrics_port, "--metrics-port")):
        if not 0 <= port <= 65535:
            raise DemoError(f"{flag} must be within 0..65535, got {port}")
    if args.api_port != 0 and args.api_port == args.metrics_port:  # found only once both servers started
        raise DemoError(f"--api-port and --metrics-port are both {args.api_port}: give them different ports")
    out = Path(args.out)
    _make_dir(out, "--out")
    report_path = Path(args.report) if args.report else None
    if report_path is not None:
        _check_writable_file(report_path, "--report")
    return Options(plan, traffic, out, report_path, args.api_port, args.metrics_port)


def _make_dir(path: Path, flag: str) -> None:
    """Create ``path`` (and its parents) now, so a path that cannot be a directory stops nothing."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"{flag} {path}: cannot create the directory ({exc.strerror or exc})") from None


LOCK_NAME = ".demo.lock"


@contextmanager
def _holding(out: Path) -> Iterator[None]:
    """Hold ``out`` for this run: two demos writing one directory overwrote each other's logs,
    plots and recorded traffic. The lock is the kernel's (``flock``), so it goes with the process
    however that ends, and a stale lock file from a killed run blocks nothing."""
    path = out / LOCK_NAME
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise DemoError(f"--out {out}: cannot create {LOCK_NAME} ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise DemoError(
                f"--out {out} is in use by another demo run (pid {holder}): "
                "pass another --out, or wait for it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _check_writable_file(path: Path, flag: str) -> None:
    """Refuse a file the run could not write at its end (its directory is created now)."""
    _make_dir(path.parent, flag)
    if path.is_dir():
        raise DemoError(f"{flag} {path}: is a directory, not a file")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise DemoError(f"{flag} {path}: cannot write there (permission denied)")


# ---- signals ------------------------------------------------------------------------------------


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM does what Ctrl-C does, through whichever SIGINT handler is active: Python's (raise
    KeyboardInterrupt) or asyncio's while the traffic plays (cancel the session, then raise)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """While cleaning up: a Ctrl-C or SIGTERM must not cut the cleanup short and leave processes
    behind, nor be lost. The first one is remembered and raised as :class:`KeyboardInterrupt` once
    the cleanup is done (the run ends as interrupted, exit 130); any later one is ignored. If the
    cleanup itself raised, that exception goes on instead."""
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)


# ---- the run ------------------------------------------------------------------------------------


def _wait_first_worker(monitor: Monitor, plan: Plan, logs: Path) -> None:
    """Traffic starts with one warm worker, as in the replays (and the reference numbers)."""
    deadline = time.monotonic() + plan.wall(plan.workload.startup_seconds) + WARM_UP_GRACE_WALL
    while True:
        tick = monitor.latest
        if tick is not None and tick.snapshot is not None and tick.snapshot.ready >= 1:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first worker did not become ready; see the logs in {logs}")
        time.sleep(0.1)


def drain_timeout(plan: Plan, outstanding: int) -> float:
    """Wall seconds to wait after the last submission: a warm-up, the backlog on all workers, slack."""
    w = plan.workload
    backlog = math.ceil(outstanding / plan.max_workers) * w.service_seconds
    return 30.0 + 3 * plan.wall(w.startup_seconds + backlog + w.slo_seconds)


async def _session(stack: Stack, opts: Options, ledger: Ledger, monitor: Monitor, view: View) -> None:
    """Submit the traffic and follow it until every accepted job finished (or the drain times out)."""
    plan, traffic = opts.plan, opts.traffic
    loop = asyncio.get_running_loop()
    client = redis.asyncio.Redis.from_url(stack.redis_url)
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30.0) as http:
            started = loop.time()
            player = asyncio.create_task(play(http, plan, traffic, ledger))
            try:
                cursor, deadline = "0-0", math.inf
                while True:
                    reraise_lost_cancel()
                    cursor = await follow(client, plan.queue, ledger, cursor)
                    view.show(status_of(plan, traffic, loop.time() - started, ledger, monitor.latest))
                    if player.done():
                        player.result()  # a crash of the player surfaces here
                        if math.isinf(deadline):
                            deadline = loop.time() + drain_timeout(plan, ledger.outstanding)
                        if ledger.outstanding == 0 or loop.time() > deadline:
                            return
                    await asyncio.sleep(0.25)
            finally:  # the player's requests end before the HTTP client closes
                player.cancel()
                await asyncio.gather(player, return_exceptions=True)
    finally:
        await client.aclose()


def _live_run(opts: Options, console: Console, run_dir: Path) -> report.LiveRun:
    """Start the stack, play the traffic, read everything back; the stack is stopped on return."""
    plan = opts.plan
    _make_dir(run_dir, "--out")
    stack = Stack(plan, run_dir, redis_url=os.environ.get("REDIS_URL") or None,
                  api_port=opts.api_port, metrics_port=opts.metrics_port)  # fmt: skip
    monitor: Monitor | None = None
    try:
        stack.start()
        monitor = Monitor(stack.loop, stack.target).start()
        log.info(
            "waiting for the first worker to warm up (%.1f s model setup = %g s at %gx)",
            plan.wall(plan.workload.startup_seconds), plan.workload.startup_seconds, plan.speedup,
        )  # fmt: skip
        _wait_first_worker(monitor, plan, run_dir)
        log.info("replaying %s", opts.traffic.describe())
        since = time.time()
        ledger = Ledger()
        with View(plan, console) as view:
            asyncio.run(_session(stack, opts, ledger, monitor, view))
        counters = _daemon_counters(stack, monitor, plan)
        client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
        try:
            jobs = bind_sync(scan_job_times)(client, plan.queue, since=since - 1)
        finally:
            client.close()
        monitor.stop()
        rejected = ledger.sent - len(ledger.submitted)  # refused by the API or never answered
        return report.LiveRun(jobs, len(ledger.submitted), rejected, monitor.reports, monitor.lives, counters)
    except redis.RedisError as exc:  # the server went away (or turned on us) mid-run: one line, exit 1
        raise RuntimeError(f"the run stopped: Redis at {redact(stack.redis_url)} {describe(exc)}") from None
    finally:
        with _signals_deferred():
            if stack.running:
                log.info("stopping: API, workers (draining), server")
            if monitor is not None:
                monitor.stop()
            stack.close()


def _daemon_counters(stack: Stack, monitor: Monitor, plan: Plan) -> report.SloCounters | None:
    """The daemon's SLO counters once it has read every completion: scraped after its next tick.

    Every job has finished by now, so the first tick that starts after this moment reads the last
    completions. None (with a warning) if no such tick comes or the scrape fails: the counters
    are shown, never required.
    """
    done = time.time()
    deadline = time.monotonic() + 2 * plan.wall(plan.workload.tick_seconds) + 5.0
    while (latest := monitor.latest) is None or latest.now <= done:
        if time.monotonic() > deadline:
            log.warning("the daemon did not tick after the last job finished: no SLO counters")
            return None
        time.sleep(0.05)
    try:
        response = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("could not scrape the daemon's /metrics: %s", exc)
        return None
    return report.slo_counters(response.text, plan.target_name)


def _conclude(opts: Options, run: report.LiveRun, console: Console) -> int:
    """Score, plot, print and write the report; the exit status says whether every job succeeded."""
    from experiments.plots import plot_report  # matplotlib only now

    plan, traffic = opts.plan, opts.traffic
    try:
        verdict = report.judge(plan, run)
    except ValueError as exc:  # e.g. every submission was refused: nothing to score
        raise RuntimeError(f"no report: {exc} ({run.rejected} submission(s) refused)") from None
    opts.out.mkdir(parents=True, exist_ok=True)
    trace = verdict.report.prepared.trace
    recorded = opts.out / "recorded.csv"
    write_trace(recorded, trace.arrivals, trace.service)
    plots = plot_report(verdict.report, opts.out)
    title = "The live run beside simulated replays of its recorded traffic (trace seconds)"
    console.print(rich_table(verdict.outcomes, title, COLUMNS))
    console.print(
        f"traffic: {traffic.describe()}; live {plan.policy} at {plan.speedup:g}x, "
        f"max {plan.max_workers} workers",
        highlight=False,
    )
    console.print(f"simulated with: {verdict.report.prepared.setup.describe()}", highlight=False)
    console.print(
        f"jobs: {run.submitted} accepted, {verdict.completed} succeeded, {run.rejected} rejected; "
        f"warm-up measured on {verdict.startup_samples} worker start(s)",
        highlight=False,
    )
    counters = verdict.counters
    if counters is not None and counters.attainment is not None:
        console.print(
            f"the daemon's own SLO counters (/metrics): {counters.within_slo} of {counters.finished} "
            f"finished jobs within {plan.workload.slo_seconds:g} s ({counters.attainment:.1%})",
            highlight=False,
        )
    for path in (*plots, recorded):
        console.print(f"wrote {path}", highlight=False)
    if opts.report is not None:
        report.write_json(opts.report, verdict.as_json(plan, traffic))
        console.print(f"wrote {opts.report}", highlight=False)
    ok = run.rejected == 0 and verdict.completed == run.submitted
    if not ok:
        console.print(f"[bold red]not every job succeeded[/]: {run.submitted - verdict.completed} missing")
    return EXIT_OK if ok else EXIT_INCOMPLETE


def _setup_logging(console: Console) -> None:
    """Warnings from every part, and the demo's own steps; through the console in a terminal, so
    log lines print above the live panel instead of through it."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    # SIGINT explicitly too: a shell starting the demo in the background hands it SIGINT ignored.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate_as_interrupt),
    }
    try:
        opts = options(args)
        with _holding(opts.out):
            _setup_logging(console)
            run = _live_run(opts, console, opts.out / "logs")
            return _conclude(opts, run, console)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        print("interrupted: the API, the workers and the server are stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
