"""``/metrics`` on a listener of its own (``METRICS_PORT``, default 9464), away from the API's port.

On the API's public port, ``/metrics`` showed every client that can reach the API its per-queue
submission counts, backlog and refusals. Here it is served by the same bounded server the workers'
and the autoscaler's probes use (:class:`jobqueue.httpreply.BoundedHTTPServer`: at most 32
connections, each closed after 10 s idle, a daemon thread each), so the port can be opened to
Prometheus alone (deploy/kustomize/base/networkpolicy.yaml). prometheus_client's own
``start_http_server`` was not used: its server keeps a thread per connection, however many and for
as long as they stay open, which is what ``BoundedHTTPServer`` was written to fix.

It renders from another thread than the event loop's; prometheus_client's metrics lock their
values, so a scrape reads a consistent number for each series and never waits for the loop (a
stalled loop is still scraped, its ``api_request_duration_seconds`` included).
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler
from typing import Any

from api.metrics import CONTENT_TYPE, ApiMetrics
from jobqueue.httpreply import ThreadedServer, send_reply

log = logging.getLogger(__name__)


class MetricsListenError(OSError):
    """The listener cannot take ``host``:``port`` (in use, not an address of this host, ...)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port, self.cause = host, port, cause

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return (
            f"cannot serve metrics on {where} (METRICS_HOST, METRICS_PORT): {self.strerror}; give "
            "METRICS_PORT a free port, or the API's PORT to serve /metrics there as before"
        )


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            send_reply(self, 200, self.server.metrics.render(), CONTENT_TYPE)
        else:
            send_reply(self, 404, b"not found: this port serves /metrics only\n", "text/plain")

    def log_message(self, format: str, *args: Any) -> None:  # a scrape every few seconds: quiet
        log.debug("metrics http %s", format % args)


class MetricsServer(ThreadedServer):
    """Serves ``metrics`` at ``/metrics`` on a daemon thread once :meth:`start` is called; ``port``
    0 picks a free one (see :attr:`port`). ``host`` an IPv6 address (``::``) listens on IPv6, and
    takes IPv4 too where the system allows."""

    def __init__(self, host: str, port: int, metrics: ApiMetrics) -> None:
        self.metrics = metrics
        try:
            super().__init__(host, port, _Handler, "metrics")
        except OSError as exc:
            raise MetricsListenError(host, port, exc) from exc
