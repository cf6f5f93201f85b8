"""``python -m api.traffic``: show or change the live traffic split (canary, A/B, rollback), and
retire a version that no longer serves.

    python -m api.traffic show
    python -m api.traffic set resnet v1=90 v2=10      # canary 10 %
    python -m api.traffic set resnet v1=100           # roll back
    python -m api.traffic clear resnet                # back to the API's TRAFFIC_WEIGHTS
    python -m api.traffic retire resnet v1 --dry-run  # what retiring v1 would do
    python -m api.traffic retire resnet v1 --move-to v2 --wait 120

Writes go to Redis (``REDIS_URL``, ``KEY_PREFIX``); every API replica follows within its
``TRAFFIC_REFRESH_SECONDS``. No restart, no redeploy. ``retire`` deletes the version's queue once
nothing is left in it (:mod:`jobqueue.retire_run`); run where the API's environment is (its
``MODEL_REF``, ``TRAFFIC_WEIGHTS``) and it checks those too. Exit status: 0 done, 1 Redis
unreachable, 2 bad input or unknown version, 3 retire refused (the message says why and what to do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import redis

from api.config import parse_traffic_weights
from jobqueue import Settings
from jobqueue.binding import bind_sync
from jobqueue.errors import misconfigured, remedy
from jobqueue.keys import prefix_from_env, validate_queue
from jobqueue.redis_url import redact, url_problem
from jobqueue.retire_checks import ApiRoutes, RetireOptions, check_names, routes_from
from jobqueue.retire_run import DEFAULT_SETTLE_SECONDS, Pacing, UnknownVersionError, retire_version
from jobqueue.traffic import clear_traffic, read_traffic, set_traffic, validate_weights

REFUSED = 3
"""Exit status of a retire refused (or, dry, that would be): nothing unsafe was done."""


def _weights(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        if not sep:
            raise ValueError(f"{pair!r} is not version=weight")
        try:
            out[version] = float(weight)
        except ValueError:
            raise ValueError(f"{pair!r}: the weight {weight!r} is not a number") from None
    return out


def _connect(url: str) -> redis.Redis:
    """A client for ``url``; one that redis-py cannot use is a ValueError naming REDIS_URL."""
    problem = url_problem(url)  # as the API checks it at start
    if problem is not None:
        raise ValueError(f"REDIS_URL {problem}")
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def _seconds(flag: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{flag} {raw!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise ValueError(f"{flag} must be between 0 and 86400 seconds, got {raw!r}")
    return value


def _api_routes(env: dict[str, str]) -> ApiRoutes | None:
    """Where the API routes by configuration, if this environment has its ``MODEL_REF`` (or
    ``QUEUE``) or ``TRAFFIC_WEIGHTS`` (read as the API reads them); None if it has neither."""
    ref = (env.get("MODEL_REF", "").strip() or env.get("QUEUE", "").strip()) or None
    name = "MODEL_REF" if env.get("MODEL_REF", "").strip() else "QUEUE"
    if ref is not None:
        try:
            validate_queue(ref)
        except ValueError as exc:
            raise ValueError(f"{name}={ref!r}: {exc}") from None
    raw = env.get("TRAFFIC_WEIGHTS", "").strip()
    try:
        configured = parse_traffic_weights(raw) if raw else None
    except ValueError as exc:
        raise ValueError(f"TRAFFIC_WEIGHTS={raw!r}: {exc}") from None
    return routes_from(ref, configured)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m api.traffic", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print every live split as JSON")
    s = sub.add_parser("set", help="replace a model's split")
    s.add_argument("model")
    s.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    c = sub.add_parser("clear", help="drop a model's live split (configured weights apply again)")
    c.add_argument("model")
    r = sub.add_parser("retire", help="delete a version's queue once nothing is left in it")
    r.add_argument("model")
    r.add_argument("version")
    r.add_argument("--move-to", metavar="VERSION", help="move its waiting jobs to this version first")
    r.add_argument("--dead-letters", choices=("keep", "delete"), help="keep them 30 days, or delete them")
    r.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    r.add_argument("--wait", default="0", metavar="SECONDS", help="wait for jobs to finish, workers to stop")
    r.add_argument(
        "--settle",
        default=f"{DEFAULT_SETTLE_SECONDS:g}",
        metavar="SECONDS",
        help="how long the version must stay out of the split before its keys go (default %(default)s; "
        "more than the API's TRAFFIC_REFRESH_SECONDS)",
    )
    return ap


def _retire_request(args: argparse.Namespace) -> tuple[RetireOptions, Pacing]:
    """The retire's options and pacing from the command line and the environment (``ValueError``
    naming what is wrong)."""
    check_names(args.model, args.version, args.move_to)
    pacing = Pacing(wait=_seconds("--wait", args.wait), settle=_seconds("--settle", args.settle))
    return RetireOptions(args.move_to, args.dead_letters, _api_routes(dict(os.environ))), pacing


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    retire = args.command == "retire"
    try:  # everything the command line and environment say is checked before Redis is touched
        settings = Settings(prefix=prefix_from_env(os.environ))  # as the API reads it
        weights = _weights(args.weights) if args.command == "set" else {}
        if args.command == "set":
            validate_weights(args.model, weights)
        options, pacing = _retire_request(args) if retire else (RetireOptions(), Pacing())
        client = _connect(url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if retire:
            done = retire_version(
                client,
                args.model,
                args.version,
                options,
                settings=settings,
                dry_run=args.dry_run,
                pacing=pacing,
            )
            return 0 if done else REFUSED
        if args.command == "set":
            bind_sync(set_traffic)(client, args.model, weights, settings=settings)
        elif args.command == "clear":
            bind_sync(clear_traffic)(client, args.model, settings=settings)
        print(json.dumps(bind_sync(read_traffic)(client, settings=settings), sort_keys=True))
    except redis.RedisError as exc:
        again = "; what the retire did so far is whole (one script a step): run it again" if retire else ""
        print(f"error: {_unreachable(url, exc)}{again}", file=sys.stderr)
        return 1
    except UnknownVersionError as exc:  # found out from Redis: no queue by that name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


def _unreachable(url: str, exc: redis.RedisError) -> str:
    """What went wrong talking to Redis, and what to check (the URL shown without its password)."""
    if misconfigured(exc):
        return f"Redis at {redact(url)} refused this client ({exc}): {remedy(exc)}"
    return (
        f"cannot reach Redis at {redact(url)} ({exc}): set REDIS_URL to the server the API uses, "
        "and check that it is running"
    )


if __name__ == "__main__":
    sys.exit(main())
