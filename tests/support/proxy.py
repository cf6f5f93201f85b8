"""A TCP proxy in front of the real Valkey that can lose one reply on the way back to the client.

Why: "the command ran but its reply never arrived" is the failure that makes a non-idempotent
write count twice when the caller retries. It cannot be produced by stopping the server (then the
command never runs); it takes a connection that dies between the server's execution and the
client's read, which is what this proxy does for the first request (or the first few) containing a
marker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from tests.support.valkey import free_port


class TcpProxy:
    """Listens on ``127.0.0.1:<port>`` (0: any free port) and serves each accepted connection on a
    thread of its own: :meth:`_serve` gets the client and ``connect()``, a new upstream socket.
    Subclasses set up their own state first, then call ``super().__init__`` (which starts accepting).
    """

    def __init__(self, connect: Callable[[], socket.socket], port: int = 0, name: str = "proxy") -> None:
        self._connect = connect
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        self._serve(client, self._connect())

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the accept loop before closing the listener, never the other way round.

        A thread left blocked in ``accept()`` on a closed listener outlives it, and accepts a later
        test's connection once the descriptor number is reused (a daemon's ``/metrics``, reset by
        this proxy: a "connection reset" in an unrelated test; the TLS relay in
        ``tests/integration/test_api_tls.py`` had the same fault). ``shutdown()`` wakes the blocked
        ``accept()`` (EINVAL on Linux), so the thread has returned before the descriptor is freed.
        """
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        assert not self._acceptor.is_alive(), "the proxy's accept loop did not stop"
        self._listener.close()


class ReplyDropper(TcpProxy):
    """Forwards ``127.0.0.1:<port>`` to ``upstream_port``; after :meth:`drop_reply_to` it closes
    the client's connection instead of forwarding the reply to the next request containing the
    marker (the server has executed that request by then), or to the next ``times`` of them."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._drops_left = 0
        self.dropped = threading.Event()
        super().__init__(lambda: socket.create_connection(("127.0.0.1", upstream_port)), free_port(), "proxy")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: bytes, times: int = 1) -> None:
        """Lose the replies to the next ``times`` requests containing ``marker`` (more than one: a
        client that reconnects and resends by itself, as redis-py's retry does, loses that too)."""
        with self._lock:
            self._marker = marker
            self._drops_left = times

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        doomed = threading.Event()  # set when this connection's next reply must be lost
        threading.Thread(target=self._up, args=(client, upstream, doomed), daemon=True).start()
        self._down(upstream, client, doomed)

    def _up(self, client: socket.socket, upstream: socket.socket, doomed: threading.Event) -> None:
        while data := _recv(client):
            with self._lock:
                if self._marker is not None and self._marker in data:
                    self._drops_left -= 1
                    if self._drops_left <= 0:
                        self._marker = None
                    doomed.set()  # before forwarding, so the reply cannot overtake the flag
            if not _send(upstream, data):
                break
        _close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, doomed: threading.Event) -> None:
        while data := _recv(upstream):
            if doomed.is_set():
                _close(client, upstream)
                self.dropped.set()
                return
            if not _send(client, data):
                break
        _close(client, upstream)

    def __enter__(self) -> ReplyDropper:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):  # already shut by the other direction
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
