"""The retire of one version, step by step, on a blocking client: what ``python -m api.traffic
retire`` runs. The steps are :mod:`jobqueue.retire`'s operations, the decisions
:mod:`jobqueue.retire_checks`'; this module only sequences them, waits, and reports.

The sequence, and why it is safe against workers and API replicas acting meanwhile:

1. Read the version's state and print the plan. A dry run stops here (exit status says whether
   the real run would go ahead now). Nothing is written before every blocker is gone, or only
   blockers that clear by themselves are left and the operator said to wait for them.
2. Sweep: move the waiting jobs to ``--move-to`` (or, without one, delete only the entries no
   worker would run), one atomic batch at a time; read the state again. Repeat each second while
   blockers that clear by themselves remain, up to ``--wait``; a blocker the operator must lift
   ends the run at once, as does the end of the wait.
3. Settle: the retire goes ahead no sooner than ``settle`` seconds after the state was first read
   with the version out of the split, so every API replica has refreshed its split by then (they
   do every ``TRAFFIC_REFRESH_SECONDS``); a last sweep and read follow the wait.
4. Retire: one script deletes the queue's keys only if nothing is left in its streams and the
   arrivals counter still reads what step 1 read. A job that arrived meanwhile (something still
   routes here) stays where it is, and the run is refused: run it again once that is fixed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import redis

from jobqueue.binding import bind_sync
from jobqueue.keys import queue_name
from jobqueue.retire import Retired, Sweep, VersionState, inspect_version, retire_queue, sweep_queue
from jobqueue.retire_checks import (
    DEAD_LETTER_KEEP_SECONDS,
    Blocker,
    RetireOptions,
    blockers,
    check_names,
    plan_lines,
    unknown_version,
)
from jobqueue.types import Settings

_inspect = bind_sync(inspect_version)
_sweep = bind_sync(sweep_queue)
_retire = bind_sync(retire_queue)

DEFAULT_SETTLE_SECONDS = 5.0
"""Longer than the API's default ``TRAFFIC_REFRESH_SECONDS`` (2 s) plus a request in progress."""


class UnknownVersionError(ValueError):
    """The version has no queue (never submitted to, retired already, or a typo)."""


@dataclass(frozen=True, slots=True)
class Pacing:
    """How long to wait for blockers that clear by themselves, the settle time, and the clock and
    sleep to do it with (a test passes its own)."""

    wait: float = 0.0
    settle: float = DEFAULT_SETTLE_SECONDS
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _refuse(found: list[Blocker], err: TextIO, changed: str) -> bool:
    for blocker in found:
        print(f"refused: {blocker.message}", file=err)
    print(f"refused: {changed}", file=err)
    return False


def _moved(total: Sweep, move_to: str | None) -> str:
    if total.runnable or total.dropped:
        where = f"moved {total.runnable} job(s) to {move_to}, " if move_to else ""
        return f"{where}deleted {total.dropped} dead entry(ies); the queue itself is kept"
    return "nothing changed"


def _retired_line(state: VersionState, result: Retired, total: Sweep) -> str:
    kept = ""
    if result.dead_letters_kept:
        kept = f"; {result.dead_letters_kept} dead letter(s) kept {DEAD_LETTER_KEEP_SECONDS // 86400} days"
    return (
        f"retired {state.queue}: moved {total.runnable} job(s), deleted {total.dropped} dead entry(ies) "
        f"and the queue's keys{kept}"
    )


def retire_version(
    client: redis.Redis,
    model: str,
    version: str,
    options: RetireOptions,
    *,
    settings: Settings,
    dry_run: bool = False,
    pacing: Pacing | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> bool:
    """Retire ``model:version`` (see the module docstring); True once retired (a dry run: if it
    would go ahead now). Bad names and an unknown version raise ``ValueError``; Redis errors
    propagate. Refusals are printed on ``err``, the plan and progress on ``out`` (stderr and stdout
    as they are at the call)."""
    pacing, out, err = pacing or Pacing(), out or sys.stdout, err or sys.stderr
    check_names(model, version, options.move_to)
    target = queue_name(model, options.move_to) if options.move_to else None
    state = _inspect(client, model, version, options.move_to, settings=settings)
    if not state.exists:
        raise UnknownVersionError(unknown_version(state, settings.prefix))
    print(("dry run, nothing changes: " if dry_run else "") + f"retire {state.queue}", file=out)
    for line in plan_lines(state, options, prefix=settings.prefix):
        print(f"  {line}", file=out)
    found = blockers(state, options, prefix=settings.prefix)
    if dry_run:
        return not found or _refuse(found, err, "a real run would change nothing now")
    if found and (pacing.wait <= 0 or not all(b.clears for b in found)):
        return _refuse(found, err, "nothing changed")
    started, arrivals, total = pacing.clock(), state.arrivals, Sweep()
    shown: list[str] = []
    while True:
        high, normal = _sweep(client, state.queue, target, settings=settings)
        total = total + high + normal
        state = _inspect(client, model, version, options.move_to, settings=settings)
        found = blockers(state, options, prefix=settings.prefix)
        waited = pacing.clock() - started
        if found and (waited >= pacing.wait or not all(b.clears for b in found)):
            return _refuse(found, err, _moved(total, target))
        if found and [b.message for b in found] != shown:
            shown = [b.message for b in found]
            print(f"  waiting up to {pacing.wait - waited:.0f} s: {shown[0]}", file=out)
        if not found and waited >= pacing.settle:
            break
        pacing.sleep(min(1.0, pacing.wait - waited) if found else pacing.settle - waited)
    keep = DEAD_LETTER_KEEP_SECONDS if options.dead_letters == "keep" else None
    result = _retire(
        client, state.queue, expected_arrivals=arrivals, keep_dead_letters_seconds=keep, settings=settings
    )
    if not result.done:
        return _refuse([_late(state.queue, arrivals, result)], err, _moved(total, target))
    print(_retired_line(state, result, total), file=out)
    return True


def _late(queue: str, arrivals: int, result: Retired) -> Blocker:
    """Why the last step refused: a job came in after the last look (the script checks both)."""
    if result.arrivals is None:
        return Blocker(
            f"{result.entries + result.pending} job(s) came into {queue} at the last moment: run again"
        )
    return Blocker(
        f"the arrivals counter of {queue} moved from {arrivals} to {result.arrivals} during the retire: "
        "an API replica still routes there (its split not yet refreshed, or TRAFFIC_WEIGHTS lists it) "
        "or a client names it; the jobs wait there, safe. Fix the routing and run again"
    )
