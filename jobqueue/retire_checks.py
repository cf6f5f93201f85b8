"""Whether a version may be retired now, and what a retire would do: pure functions of what
:func:`jobqueue.retire.inspect_version` read, so every refusal and its advice is testable alone.

A retire must not lose an accepted job nor leave one where nothing serves it, so it is refused:

- while the version is in the model's live traffic split (any weight: weight 0 still makes it
  addressable by name), or is the API's ``MODEL_REF`` or in its ``TRAFFIC_WEIGHTS`` when this
  process has the API's environment: the API would keep queueing jobs there, recreating the queue;
- while jobs wait in it, unless they are moved to another version of the model that was submitted
  to already (``--move-to``); jobs in flight, until they finish;
- while workers of the version are alive: each one would recreate the empty streams the retire
  deleted (its next read makes its consumer group again), and stay unseen;
- while it holds dead letters and the operator has not said to keep or delete them: they are the
  only record of jobs that failed every attempt.

A :class:`Blocker` that can clear by itself (jobs finishing, workers stopping) is worth waiting for
(``--wait``); the others need the operator to act, and the message says how.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobqueue.keys import Keyspace, queue_name
from jobqueue.retire import VersionState
from jobqueue.traffic import Weights

DEAD_LETTER_KEEP_SECONDS = 30 * 86400
"""How long ``--dead-letters keep`` keeps a retired version's dead letters: a month to read them,
then they expire instead of staying for ever."""
TRAFFIC_CLI = "python -m api.traffic"


@dataclass(frozen=True, slots=True)
class ApiRoutes:
    """Where the API routes by its own configuration, read from its environment when this process
    has it: ``MODEL_REF``'s queue (when it names a version) and ``TRAFFIC_WEIGHTS``."""

    default_queue: str | None = None
    configured: Mapping[str, Weights] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetireOptions:
    """The operator's choices: where waiting jobs go (a version), what becomes of dead letters
    (``keep`` or ``delete``; None: undecided), and the API's routes if known (None: not here)."""

    move_to: str | None = None
    dead_letters: str | None = None
    routes: ApiRoutes | None = None


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why the version cannot be retired now; ``clears`` if it may clear without the operator."""

    message: str
    clears: bool = False


def check_names(model: str, version: str, move_to: str | None = None) -> None:
    """Raise ``ValueError`` naming what is wrong with the names, before anything is read.

    A version holding ``:`` is refused although a queue name may hold one: ``model:a:b`` is read
    back as model ``model:a``, version ``b``, so it would not be this model's version at all."""
    for name, value in (("model", model), ("version", version), ("--move-to", move_to)):
        if value is not None and not value:
            raise ValueError(f"{name} must not be empty")
        if value is not None and name != "model" and ":" in value:
            raise ValueError(f"{name} {value!r} holds ':': give the model and the version apart")
    queue_name(model, version)  # raises ValueError on a name no queue can have
    if move_to is not None:
        queue_name(model, move_to)
        if move_to == version:
            raise ValueError(f"--move-to {move_to!r} is the version being retired: name another one")


def unknown_version(state: VersionState, prefix: str) -> str:
    """The error for a version with no queue: what exists instead, and what to check."""
    if state.other_versions:
        return (
            f"{state.queue} has no queue under prefix {prefix!r}: versions of {state.model} there are "
            f"{', '.join(state.other_versions)} (if {state.version} was retired already, nothing is left "
            "to do)"
        )
    return (
        f"model {state.model!r} has no queue under prefix {prefix!r}: check the model name, and "
        "KEY_PREFIX and REDIS_URL against the API's"
    )


def split_without(weights: Mapping[str, float], version: str) -> Weights | None:
    """``weights`` without ``version``, or None when no version would be left with a weight > 0."""
    rest = {v: float(w) for v, w in weights.items() if v != version}
    return rest if any(w > 0 for w in rest.values()) else None


def _set_command(model: str, weights: Mapping[str, float], version: str, others: tuple[str, ...]) -> str:
    rest = split_without(weights, version)
    if rest is not None:
        pairs = " ".join(f"{v}={w:g}" for v, w in sorted(rest.items()))
        return f"{TRAFFIC_CLI} set {model} {pairs}"
    choice = next(iter(sorted(set(others) - {version})), "VERSION")
    return f"{TRAFFIC_CLI} set {model} {choice}=100"


def _routing_blockers(state: VersionState, options: RetireOptions) -> list[Blocker]:
    out = []
    split = state.live_split or {}
    if state.version in split:
        weight = split[state.version]
        share = f"weight {weight:g}" if weight > 0 else "weight 0 (addressable by name)"
        out.append(
            Blocker(
                f"{state.queue} is in the live traffic split with {share}: take it out first "
                f"({_set_command(state.model, split, state.version, state.other_versions)}), wait the "
                "API's TRAFFIC_REFRESH_SECONDS, then retire"
            )
        )
    routes = options.routes
    if routes is not None and routes.default_queue == state.queue:
        out.append(
            Blocker(
                f"{state.queue} is the API's MODEL_REF (where /infer and /push submit): set MODEL_REF "
                "to another version, or to the model with TRAFFIC_WEIGHTS, roll the API out, then retire"
            )
        )
    if routes is not None and state.version in routes.configured.get(state.model, {}):
        out.append(
            Blocker(
                f"{state.queue} is in the API's TRAFFIC_WEIGHTS: a version listed there stays addressable "
                "by name even when the live split leaves it out; remove it, roll the API out, then retire"
            )
        )
    return out


def _work_blockers(state: VersionState, options: RetireOptions) -> list[Blocker]:
    out = []
    waiting = state.waiting.runnable
    if waiting and options.move_to is None:
        served = (
            f"its {len(state.workers)} live worker(s) are serving them (--wait SECONDS waits), or"
            if state.workers
            else "no worker of it is alive to serve them:"
        )
        known = ", ".join(state.other_versions) or "none yet"
        out.append(
            Blocker(
                f"{waiting} job(s) wait in {state.queue} ({state.waiting_high} high priority): {served} "
                f"move them with --move-to VERSION (versions of {state.model}: {known})",
                clears=bool(state.workers),
            )
        )
    if state.in_flight:
        held = ", ".join(
            f"{name} ({count}{'' if name in state.workers else ', not alive'})"
            for name, count in sorted(state.holders.items())
        )
        out.append(
            Blocker(
                f"{state.in_flight} job(s) in flight in {state.queue}, held by {held}: wait for them to "
                "finish (--wait SECONDS); a holder that is not alive keeps its job until a worker of this "
                "version reclaims it after its VISIBILITY_TIMEOUT, so keep one running until then",
                clears=True,
            )
        )
    if state.workers:
        out.append(
            Blocker(
                f"{len(state.workers)} worker(s) of {state.queue} are alive ({', '.join(state.workers)}): "
                "each would recreate the queue's streams after the retire. Scale their Deployment to 0 "
                "(they finish their job first) and drop its autoscaler target so nothing scales it up, "
                "then retire (--wait SECONDS waits for them to stop)",
                clears=True,
            )
        )
    return out


def blockers(state: VersionState, options: RetireOptions, *, prefix: str = "jq") -> list[Blocker]:
    """Every reason ``state``'s version cannot be retired with ``options`` now (empty: it can)."""
    out = []
    target = state.target
    if options.move_to is not None and (target is None or not target.listed):
        known = ", ".join(state.other_versions) or "none"
        out.append(
            Blocker(
                f"--move-to {options.move_to}: {state.model}:{options.move_to} was never submitted to "
                f"(versions of {state.model} with a queue: {known}); name a version that serves"
            )
        )
    out += _routing_blockers(state, options)
    if state.dead_letters and options.dead_letters is None:
        dead = Keyspace(prefix).queue(state.queue).dead
        out.append(
            Blocker(
                f"{state.queue} holds {state.dead_letters} dead letter(s) (jobs that failed every attempt): "
                f"read them (redis-cli XREVRANGE {dead} + - COUNT 20), then pass --dead-letters keep "
                f"(kept {DEAD_LETTER_KEEP_SECONDS // 86400} days, then they expire) or --dead-letters delete"
            )
        )
    return out + _work_blockers(state, options)


def plan_lines(
    state: VersionState, options: RetireOptions, *, prefix: str = "jq", now: float | None = None
) -> list[str]:
    """What a retire of ``state``'s version does with ``options``, one line per step."""
    lines = [
        f"{state.queue}: {state.waiting.runnable} job(s) waiting ({state.waiting_high} high priority), "
        f"{state.in_flight} in flight, {len(state.workers)} live worker(s), {state.arrivals} arrival(s) "
        f"counted, {state.completions} completion(s) recorded"
    ]
    target = state.target
    if options.move_to is not None and target is not None:
        serving = f"live workers: {', '.join(target.workers)}" if target.workers else "no live worker yet"
        lines.append(f"move {state.waiting.runnable} waiting job(s) to {target.queue} ({serving})")
    if state.waiting.dropped:
        lines.append(
            f"delete {state.waiting.dropped} entry(ies) no worker would run (of cancelled, finished or "
            "vanished jobs)"
        )
    if state.dead_letters:
        fate = {
            "delete": "delete them",
            "keep": f"keep them {DEAD_LETTER_KEEP_SECONDS // 86400} days",
            None: "undecided: --dead-letters keep|delete",
        }[options.dead_letters]
        lines.append(f"dead letters: {state.dead_letters} ({fate})")
    base = Keyspace(prefix).queue(state.queue).base
    present = ", ".join(k.removeprefix(base + ":") for k in state.keys)
    lines.append(f"delete the queue's keys ({present or 'none left'})")
    lines.append(f"remove {state.queue} from {prefix}:queues and {prefix}:keyed:{state.model}")
    if state.keyed_until is not None and state.keyed_until > (time.time() if now is None else now):
        until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(state.keyed_until))
        lines.append(
            f"note: idempotency keys used on {state.queue} may live until {until}; a retry carrying one "
            "that names no version is routed by the split and queued anew (its first job stays readable)"
        )
    lines.append(f"leave job records ({prefix}:job:<id>), idempotency keys and cached results to expire")
    return lines


def routes_from(default_ref: str | None, configured: Mapping[str, Weights] | None) -> ApiRoutes | None:
    """:class:`ApiRoutes` from the API's ``MODEL_REF`` (a queue or a model) and parsed
    ``TRAFFIC_WEIGHTS``, None when neither is set here (this is not the API's environment)."""
    if default_ref is None and configured is None:
        return None
    queue = default_ref if default_ref is not None and ":" in default_ref else None
    return ApiRoutes(default_queue=queue, configured=dict(configured or {}))
