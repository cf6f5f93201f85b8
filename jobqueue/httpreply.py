"""The probe and metrics servers' HTTP plumbing: one complete answer, and a server that bounds its
connections.

The autoscaler's ``/metrics``/``/healthz``/``/readyz`` server (:mod:`autoscaler.metrics`) and the
worker's probe server (:mod:`worker.probes`) answer the same way: a status, a content type and a
body sent whole with its length. They are served the same way too, by :class:`BoundedHTTPServer`.
It lives here because ``jobqueue`` is the one package both of them already import and every image
ships; a copy in each drifted apart only by accident.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

log = logging.getLogger("jobqueue.httpreply")

REQUEST_TIMEOUT_SECONDS = 10.0
"""How long a connection may keep the server waiting for its next bytes (or for its answer to be
taken) before it is closed."""

MAX_CONNECTIONS = 32
"""Connections served at once; each holds a thread. Probes and scrapes need a handful."""


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


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, as ``ThreadingHTTPServer``, but neither unbounded in number nor in
    time: the plain one kept a thread for every half-sent request, for ever (2,000 idle connections
    held 2,003 threads and 53 MB more, and a client could keep adding).

    * Every connection gets ``request_timeout`` seconds per read and write: one that sends nothing
      for that long is closed (its handler logs "Request timed out" and returns).
    * At most ``max_connections`` are open at once. One more closes the *oldest* open connection to
      make room, rather than refusing the newcomer: a well-behaved probe or scrape is answered in
      milliseconds, so the oldest connection is in practice a stalled or idle one, and a flood of
      idle connections cannot keep the kubelet's probes from being answered (refusing newcomers
      would let a few dozen idle sockets fail the liveness probe and restart the pod).
    """

    daemon_threads = True
    request_timeout: float = REQUEST_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    # The listen backlog: with the standard library's 5, a burst of connections (idle ones, say)
    # had the kernel drop further SYNs, and a probe arriving then waited for a 1 s retransmission.
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: dict[socket.socket, None] = {}  # insertion order: the oldest first
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = super().get_request()
        # Set on the socket itself, so it holds whatever the handler class (whose own `timeout`
        # attribute, None by default, is applied only when set).
        request.settimeout(self.request_timeout)
        return request, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            while len(self._open) >= max(1, self.max_connections):
                oldest = next(iter(self._open))
                del self._open[oldest]
                # Its thread is woken (its read ends) and closes it; shutdown under the lock, which
                # that thread's shutdown_request takes before closing, so the descriptor is still
                # this connection's.
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            self._open[request] = None
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, timed out, closed to make room) is no server error: no
        traceback on stderr for it. Anything else is reported as the standard library does."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %r", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)


def address_family(host: str) -> socket.AddressFamily:
    """The family to listen on ``host`` with: IPv6 for an IPv6 address (``::``, ``::1``, ...) or a
    name that resolves to IPv6 addresses only, else IPv4. A name with both keeps IPv4, what it bound
    before IPv6 was served (``localhost`` stays 127.0.0.1). Raises ``socket.gaierror`` for a name
    that does not resolve."""
    if not host:
        return socket.AF_INET  # every IPv4 address, as the standard library reads ""
    with contextlib.suppress(ValueError):
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = {info[0] for info in infos}
    return socket.AF_INET6 if families == {socket.AF_INET6} else socket.AF_INET


class ThreadedServer(BoundedHTTPServer):
    """A :class:`BoundedHTTPServer` on ``host``:``port`` that serves on a daemon thread of its own
    once :meth:`start` is called; ``port`` 0 picks a free one (see :attr:`port`).

    ``host`` may be an IPv4 or IPv6 address or a name (see :func:`address_family`); ``::`` takes
    IPv4 connections too where the system allows. The autoscaler's endpoints and the API's metrics
    listener are both one of these; a failure to listen is the ``OSError`` of the bind.
    """

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        self.address_family = address_family(host)
        super().__init__((host, port), handler)
        self._thread = threading.Thread(target=self.serve_forever, name=thread_name, daemon=True)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Dual stack on "::" (Linux's default; some systems default to IPv6 only), as the
            # standard library's own `python -m http.server` does.
            with contextlib.suppress(AttributeError, OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
