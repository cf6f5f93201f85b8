"""``python -m api``: the job API on uvicorn (uvloop + httptools when installed), configured by env.

See :class:`api.config.ApiConfig` for the variables. A bad one exits with status 2 and a message
naming it. Access logs are off by default (``ACCESS_LOG=1``): at thousands of requests per second
they cost more than the request itself; Prometheus metrics cover the same ground.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from api.app import create_app
from api.config import ApiConfig, ConfigError


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = ApiConfig.from_env()
    except ConfigError as exc:
        print(f"api: configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        access_log=config.access_log,
        log_config=None,  # keep the logging configured above
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
