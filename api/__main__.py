"""``python -m api``: the job API on uvicorn (uvloop + httptools when installed), configured by env.

See :class:`api.config.ApiConfig` for the variables. A bad one exits with status 2 and a message
naming it. Access logs are off by default (``ACCESS_LOG=1``): at thousands of requests per second
they cost more than the request itself; Prometheus metrics cover the same ground. The metrics are
served on ``METRICS_PORT`` (default 9464), a listener of their own, unless it is ``PORT``.
"""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from api.app import create_app
from api.config import ApiConfig, ConfigError
from api.metrics_server import MetricsListenError, MetricsServer


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
    metrics_server = None
    if not config.metrics_on_api_port:
        try:  # before the API's port: a scrape target that cannot listen is a start-up failure
            metrics = app.state.service.metrics
            metrics_server = MetricsServer(config.metrics_host, config.metrics_port, metrics)
        except MetricsListenError as exc:
            print(f"api: {exc}", file=sys.stderr)
            return 1
        metrics_server.start()
    # The app's import-time and start-up objects (~70k: FastAPI, pydantic, the schema) never die,
    # yet every full garbage collection scanned them: 26 ms with the event loop stopped, which was
    # the whole p99 of the submission benchmark. Frozen, they are skipped (full collections < 1 ms).
    gc.collect()
    gc.freeze()
    try:
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            access_log=config.access_log,
            log_config=None,  # keep the logging configured above
            timeout_graceful_shutdown=10,
            # uvicorn reads FORWARDED_ALLOW_IPS itself, but takes a malformed entry for a host
            # name that never matches: the value checked by ApiConfig is handed over instead.
            proxy_headers=True,
            forwarded_allow_ips=list(config.forwarded_allow_ips),
        )
    finally:
        if metrics_server is not None:
            metrics_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
