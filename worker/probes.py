"""Kubernetes probes and Prometheus metrics over HTTP (stdlib server on a daemon thread).

``/readyz`` is the readiness probe: 200 only once the model is set up, so the pod's Ready time is
the real end of warm-up (the autoscaler measures startup from it); 503 again while draining.
``/healthz`` is the liveness probe: 200 while the process serves HTTP (a Redis outage is not a
reason to restart the pod). ``/metrics`` is the Prometheus exposition.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from worker.metrics import WorkerMetrics
from worker.status import LiveStatus


def start_probe_server(
    status: LiveStatus, metrics: WorkerMetrics, port: int, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve on all interfaces by default: the kubelet probes the pod IP."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/readyz":
                ok = status.ready
                self._send(200 if ok else 503, f"{status.state.value}\n".encode(), "text/plain")
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/metrics":
                metrics.state.labels(metrics.queue).state(status.state.value)
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few s: keep logs quiet
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
