"""``free_port``: ports for child processes, chosen where outgoing connections are not handed out."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jobqueue import server
from jobqueue.server import free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    low = server._ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports)
    assert len(ports) > 1  # random, so two children started together rarely collide
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_range_from_the_kernel_else_a_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    monkeypatch.setattr(server, "EPHEMERAL_RANGE_FILE", ranges)
    assert server._ephemeral_low() == 40000
    assert 23616 <= free_port() < 40000
    monkeypatch.setattr(server, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert server._ephemeral_low() == 32768
