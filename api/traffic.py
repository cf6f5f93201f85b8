"""``python -m api.traffic``: show or change the live traffic split (canary, A/B, rollback).

    python -m api.traffic show
    python -m api.traffic set resnet v1=90 v2=10      # canary 10 %
    python -m api.traffic set resnet v1=100           # roll back
    python -m api.traffic clear resnet                # back to the API's TRAFFIC_WEIGHTS

Writes go to Redis (``REDIS_URL``, ``KEY_PREFIX``); every API replica follows within its
``TRAFFIC_REFRESH_SECONDS``. No restart, no redeploy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import redis

from jobqueue import Settings
from jobqueue.binding import bind_sync
from jobqueue.errors import misconfigured, remedy
from jobqueue.keys import prefix_from_env
from jobqueue.redis_url import redact, url_problem
from jobqueue.traffic import clear_traffic, read_traffic, set_traffic, validate_weights


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m api.traffic", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print every live split as JSON")
    s = sub.add_parser("set", help="replace a model's split")
    s.add_argument("model")
    s.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    c = sub.add_parser("clear", help="drop a model's live split (configured weights apply again)")
    c.add_argument("model")
    args = ap.parse_args(argv)
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    try:  # everything the command line and environment say is checked before Redis is touched
        settings = Settings(prefix=prefix_from_env(os.environ))  # as the API reads it
        weights = _weights(args.weights) if args.command == "set" else {}
        if args.command == "set":
            validate_weights(args.model, weights)
        client = _connect(url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "set":
            bind_sync(set_traffic)(client, args.model, weights, settings=settings)
        elif args.command == "clear":
            bind_sync(clear_traffic)(client, args.model, settings=settings)
        print(json.dumps(bind_sync(read_traffic)(client, settings=settings), sort_keys=True))
    except redis.RedisError as exc:
        print(f"error: {_unreachable(url, exc)}", file=sys.stderr)
        return 1
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
