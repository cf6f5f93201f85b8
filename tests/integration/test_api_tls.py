"""``rediss://`` (TLS) with AUTH from the API to a real Valkey.

The bundled Valkey binary is built without TLS, so a small TLS-terminating relay (stdlib ``ssl``,
like stunnel or a cloud provider's TLS endpoint) sits in front of it; the API's client does a real
TLS handshake and verifies the server certificate against a CA made for the test with ``openssl``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.api import api_client
from tests.support.proxy import TcpProxy
from tests.support.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates (apt-get install openssl)", pytrace=False)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext")  # fmt: skip
    return d / "ca.crt", d / "server.crt", d / "server.key"


class TlsRelay(TcpProxy):
    """Accepts TLS on a free port and relays the plaintext to ``upstream_port``.

    The accept loop, and its stopping before the listener closes, are :class:`TcpProxy`'s; the
    upstream connection is opened only once the client's handshake succeeded.
    """

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.handshakes = 0
        super().__init__(lambda: socket.create_connection(("127.0.0.1", upstream_port)), name="tls-relay")

    def _open(self, client: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            client.close()
            return
        self.handshakes += 1
        self._serve(tls, self._connect())

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(valkey_factory: Callable[..., ValkeyServer], tmp_path: Path) -> Iterator[tuple[TlsRelay, Path]]:
    server = valkey_factory(password="tls-s3cret")
    ca, cert, key = make_certs(tmp_path)
    r = TlsRelay(server.port, cert, key)
    yield r, ca
    r.close()


def test_api_over_tls_with_auth(relay: tuple[TlsRelay, Path], tmp_path: Path) -> None:
    r, ca = relay
    url = f"rediss://:tls-s3cret@127.0.0.1:{r.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    with api_client(url) as c:
        assert c.get("/readyz").status_code == 200
        sub = c.post("/v1/jobs", json={"input": "over tls", "model": "default"})
        assert sub.status_code == 202, sub.text
        assert c.get(sub.json()["url"]).json()["input"] == "over tls"
    assert r.handshakes >= 1


def test_untrusted_certificate_is_refused_not_a_500(relay: tuple[TlsRelay, Path], tmp_path: Path) -> None:
    r, _ = relay
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = make_certs(other)
    url = f"rediss://:tls-s3cret@127.0.0.1:{r.port}/0?ssl_cert_reqs=required&ssl_ca_certs={wrong_ca}"
    with api_client(url) as c:
        assert c.get("/readyz").status_code == 503
        refused = c.post("/v1/jobs", json={"input": "x", "model": "default"})
    assert refused.status_code == 503 and refused.json()["error"] == "redis_unavailable"
