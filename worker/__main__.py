"""``python -m worker``: one inference worker process (configured by environment, see config.py)."""

from __future__ import annotations

import logging
import os
import sys

from worker.config import WorkerConfig
from worker.model import load_model
from worker.runner import Worker


def main() -> int:
    config = WorkerConfig.from_env()
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s {config.name} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    worker = Worker(config, load_model(config.model_class))
    worker.install_signal_handlers()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
