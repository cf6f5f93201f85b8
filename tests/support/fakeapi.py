"""A real HTTP server on 127.0.0.1 whose answers a test scripts: a misbehaving API, or a proxy or
gateway in front of one (an HTML 502/504 of its own, a hang, a 503 after the API stored a job).

``route(method, path, json_body)`` returns ``(status, headers, body bytes)``, or ``None`` to hang:
the request is read and never answered (until the server stops). ``seen`` lists every request as
``(method, path, json_body)`` in arrival order."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str], bytes] | None
Seen = list[tuple[str, str, Any]]
Route = Callable[[str, str, Any], Answer]


def js(status: int, body: Any, **headers: str) -> Answer:
    """A JSON answer (the API's own, or a gateway passing one through)."""
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


def html(status: int, text: str = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>") -> Answer:
    """A proxy's own error page: no JSON, no job id."""
    return status, {"Content-Type": "text/html"}, text.encode()


@contextmanager
def fake_api(route: Route) -> Iterator[tuple[str, Seen]]:
    """Serve ``route`` on a free loopback port; yields the base URL and the requests seen."""
    seen: Seen = []
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            seen.append((self.command, self.path, body))
            reply = route(self.command, self.path, body)
            if reply is None:
                stop.wait(30)
                return
            status, headers, data = reply
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = answer  # noqa: N815 (http.server's names)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
