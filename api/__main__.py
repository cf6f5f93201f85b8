"""``python -m api``: the job API on uvicorn (uvloop + httptools when installed), configured by env.

See :class:`api.config.ApiConfig` for the variables. A bad one exits with status 2 and a message
naming it. Access logs are off by default (``ACCESS_LOG=1``): at thousands of requests per second
they cost more than the request itself; Prometheus metrics cover the same ground.
"""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from api.app import create_app
from api.config import ApiConfig, ConfigError


def main() -> int:
    try:
        config = ApiConfig.from_env()
    except ConfigError as exc:
        print(f"api: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app = create_app(config)
    app.openapi()  # built once now rather than on the first /docs request, and frozen below
    # The app's import-time and start-up objects (~70k: FastAPI, pydantic, the schema) never die,
    # yet every full garbage collection scanned them: 26 ms with the event loop stopped, which was
    # the whole p99 of the submission benchmark. Frozen, they are skipped (full collections < 1 ms).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        access_log=config.access_log,
        log_config=None,  # keep the logging configured above
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
