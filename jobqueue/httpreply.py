"""One complete HTTP answer from a stdlib request handler: the probe and metrics servers' reply.

The autoscaler's ``/metrics``/``/healthz``/``/readyz`` server (:mod:`autoscaler.metrics`) and the
worker's probe server (:mod:`worker.probes`) answer the same way: a status, a content type and a
body sent whole with its length. It lives here because ``jobqueue`` is the one package both of
them already import and every image ships; a copy in each drifted apart only by accident.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def send_reply(handler: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
    """Answer the request ``handler`` is serving with ``code`` and ``body``.

    ``Content-Length`` is always sent, so a client can tell a whole body from one cut short (the
    handlers speak HTTP/1.0, which otherwise ends a body only by closing the connection).
    """
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
