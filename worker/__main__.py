"""``python -m worker``: one inference worker process (configured by environment, see config.py)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from worker.config import WorkerConfig
from worker.model import load_model
from worker.runner import Worker


def log_level(env: Mapping[str, str]) -> str:
    """LOG_LEVEL, checked so a typo names the variable (``basicConfig`` says only "Unknown level")."""
    level = (env.get("LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"LOG_LEVEL={env['LOG_LEVEL']!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def main() -> int:
    try:  # every setting is checked before anything starts; a bad one is named, exit status 2
        config = WorkerConfig.from_env()
        level = log_level(os.environ)
        worker = Worker(config, load_model(config.model_class))  # the Redis client parses REDIS_URL
    except ValueError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {config.name} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    worker.install_signal_handlers()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
