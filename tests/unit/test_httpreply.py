"""The one HTTP reply the autoscaler's metrics server and the worker's probe server both send."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from typing import Any

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
