"""The one HTTP reply the autoscaler's metrics server and the worker's probe server both send, and
the bounds both servers keep on their connections."""

from __future__ import annotations

import io
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from autoscaler.metrics import Metrics, MetricsServer
from jobqueue.httpreply import send_reply
from worker.metrics import WorkerMetrics
from worker.probes import start_probe_server
from worker.status import LiveStatus


class RecordingHandler:
    """The four calls of BaseHTTPRequestHandler a reply makes, recorded (no socket involved)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.wfile = io.BytesIO()

    def send_response(self, code: int) -> None:
        self.calls.append(("status", code))

    def send_header(self, name: str, value: str) -> None:
        self.calls.append(("header", (name, value)))

    def end_headers(self) -> None:
        self.calls.append(("end", None))


def test_a_reply_sends_status_type_length_then_the_whole_body() -> None:
    handler = RecordingHandler()
    send_reply(handler, 503, b"draining\n", "text/plain")  # type: ignore[arg-type]
    assert handler.calls == [
        ("status", 503),
        ("header", ("Content-Type", "text/plain")),
        ("header", ("Content-Length", "9")),
        ("end", None),
    ]
    assert handler.wfile.getvalue() == b"draining\n"


def test_an_empty_body_says_its_length_is_zero() -> None:
    handler = RecordingHandler()
    send_reply(handler, 200, b"", "application/json")  # type: ignore[arg-type]
    assert ("header", ("Content-Length", "0")) in handler.calls and handler.wfile.getvalue() == b""


def get(port: int, path: str) -> tuple[int, str, str | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode(), response.headers["Content-Length"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers["Content-Length"]


def test_the_worker_probes_answer_through_the_shared_reply() -> None:
    status = LiveStatus("w1", "resnet", started_at=0.0)
    server = start_probe_server(status, WorkerMetrics("resnet"), 0, host="127.0.0.1")
    port = int(server.server_address[1])
    try:
        code, body, length = get(port, "/readyz")
        assert (code, body, length) == (503, "starting\n", str(len(body)))
        status.mark_ready()
        assert get(port, "/readyz")[:2] == (200, "idle\n")
        assert get(port, "/healthz")[:2] == (200, "ok\nredis: reachable\n")
        code, body, length = get(port, "/metrics")
        assert code == 200 and "worker_redis_up" in body and length == str(len(body.encode()))
        assert get(port, "/nope")[:2] == (404, "not found\n")
    finally:
        server.shutdown()
        server.server_close()


# ---- the servers bound their connections, in number and in time ----------------------------------------


@pytest.fixture(params=["autoscaler", "worker"])
def served(request: pytest.FixtureRequest) -> Iterator[ThreadingHTTPServer]:
    """The daemon's metrics server and the worker's probe server, as each process starts them."""
    server: ThreadingHTTPServer
    if request.param == "autoscaler":
        server = MetricsServer("127.0.0.1", 0, Metrics(), lambda: (True, {}), lambda: (True, {})).start()
    else:
        status = LiveStatus("w1", "resnet", started_at=0.0)
        status.mark_ready()
        server = start_probe_server(status, WorkerMetrics("resnet"), 0, host="127.0.0.1")
    yield server
    server.shutdown()
    server.server_close()


def half_sent(port: int) -> socket.socket:
    """A connection whose request never ends (the headers' blank line never comes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return sock


def test_a_half_sent_request_is_closed_after_the_timeout(served: ThreadingHTTPServer) -> None:
    """It held its thread for ever: nothing ended a connection that stopped sending."""
    served.request_timeout = 0.3  # type: ignore[attr-defined]  # 10 s in service
    port = int(served.server_address[1])
    with half_sent(port) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, well before the client's 5 s
        assert time.monotonic() - started < 3
    assert get(port, "/healthz")[0] == 200


def test_idle_connections_cannot_pile_up_threads_nor_keep_the_probes_from_answering(
    served: ThreadingHTTPServer,
) -> None:
    """2,000 idle connections held 2,003 threads: now at most 32 are served at once, the oldest
    closed to make room, so a probe that comes after a flood of them is still answered at once."""
    port = int(served.server_address[1])
    before = threading.active_count()
    socks = [half_sent(port) for _ in range(200)]
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and threading.active_count() - before < 32:
            time.sleep(0.05)
        time.sleep(0.3)  # time to start more threads, if the server would
        assert threading.active_count() - before <= 33
        started = time.monotonic()
        for path in ("/healthz", "/readyz", "/metrics"):
            assert get(port, path)[0] == 200
        assert time.monotonic() - started < 2
        assert socks[0].recv(1024) == b""  # the oldest idle one was closed to make room
    finally:
        for sock in socks:
            sock.close()
