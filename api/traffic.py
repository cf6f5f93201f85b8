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
from jobqueue.keys import prefix_from_env
from jobqueue.traffic import clear_traffic, read_traffic, set_traffic


def _weights(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        if not sep:
            raise ValueError(f"{pair!r} is not version=weight")
        out[version] = float(weight)
    return out


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
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    try:
        settings = Settings(prefix=prefix_from_env(os.environ))  # as the API reads it
        if args.command == "set":
            bind_sync(set_traffic)(client, args.model, _weights(args.weights), settings=settings)
        elif args.command == "clear":
            bind_sync(clear_traffic)(client, args.model, settings=settings)
        print(json.dumps(bind_sync(read_traffic)(client, settings=settings), sort_keys=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
