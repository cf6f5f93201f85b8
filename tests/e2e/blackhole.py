"""A TCP pass-through to the API server (TLS end to end) whose open connections can go silent.

``freeze()`` stops every open connection forwarding, both ways, without closing it: what a
connection does whose path died (a node or load balancer gone without a reset, a dropped
conntrack entry). Connections made after ``freeze()`` work.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse


class Blackhole:
    def __init__(self, host_url: str) -> None:
        url = urllib.parse.urlsplit(host_url)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 443)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[threading.Event] = []  # one "frozen" flag per open connection
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            frozen = threading.Event()
            with self._lock:
                self._open.append(frozen)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, frozen), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, frozen: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not frozen.is_set():  # else swallowed: the path is dead and nobody is told
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            if not frozen.is_set():
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        with self._lock:
            for frozen in self._open:
                frozen.set()
            self._open = []

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
