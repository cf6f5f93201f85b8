"""Where the HTTP endpoints listen: every address ``host`` accepts, IPv6 ones included.

The server was IPv4 only: ``host: "::"`` (the usual choice on an IPv6-only cluster) passed
check-config and then stopped ``run`` with "Address family for hostname not supported".
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from autoscaler.config import parse_config
from autoscaler.metrics import ListenError, Metrics, MetricsServer
from jobqueue.httpreply import address_family
from tests.unit.test_config import VALID


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")


def _ok() -> tuple[bool, dict[str, str]]:
    return True, {}


@pytest.fixture()
def serve() -> Iterator[list[MetricsServer]]:
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.stop()


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


@needs_ipv6
def test_a_config_listening_on_every_address_serves_ipv6_and_ipv4(serve: list[MetricsServer]) -> None:
    # accepted by the config, so it must be served
    config = parse_config(VALID + 'host: "::"\n', allow_local_targets=True)
    server = MetricsServer(config.host, 0, Metrics(), _ok, _ok).start()
    serve.append(server)
    assert server.socket.family == socket.AF_INET6
    assert _status(f"http://[::1]:{server.port}/healthz") == 200
    assert _status(f"http://127.0.0.1:{server.port}/healthz") == 200  # dual stack, as http.server's


@needs_ipv6
def test_an_ipv6_address_is_listened_on_alone(serve: list[MetricsServer]) -> None:
    server = MetricsServer("::1", 0, Metrics(), _ok, _ok).start()
    serve.append(server)
    assert _status(f"http://[::1]:{server.port}/metrics") == 200


def test_ipv4_addresses_and_names_with_an_ipv4_address_stay_ipv4(serve: list[MetricsServer]) -> None:
    assert address_family("0.0.0.0") == address_family("127.0.0.1") == socket.AF_INET
    assert address_family("") == socket.AF_INET
    assert address_family("::") == address_family("fe80::1%eth0") == socket.AF_INET6
    server = MetricsServer("localhost", 0, Metrics(), _ok, _ok).start()  # resolves to 127.0.0.1 too
    serve.append(server)
    assert server.socket.family == socket.AF_INET
    assert _status(f"http://127.0.0.1:{server.port}/healthz") == 200


def test_failing_to_listen_says_on_what_and_why() -> None:
    with pytest.raises(ListenError) as unresolved:
        MetricsServer("no-such-host.invalid", 0, Metrics(), _ok, _ok)
    assert isinstance(unresolved.value.cause, socket.gaierror)
    assert unresolved.value.host == "no-such-host.invalid"
    with pytest.raises(ListenError) as foreign:
        MetricsServer("192.0.2.1", 9, Metrics(), _ok, _ok)  # TEST-NET-1: no machine's address
    assert (foreign.value.host, foreign.value.port) == ("192.0.2.1", 9)
    assert isinstance(foreign.value, OSError) and foreign.value.errno == foreign.value.cause.errno
