"""Shared fixtures: a real Valkey server (session-wide, flushed per test) and worker subprocesses.

``valkey_server`` starts one server per test session on a free loopback port; ``redis_url`` flushes
it and hands a test its URL; ``redis_client`` is a blocking client on it. Tests that stop or
restart the server get their own with ``valkey_factory`` so they cannot disturb the shared one.
``worker_pool`` spawns ``python -m worker`` processes against ``redis_url`` and kills leftovers.
Nothing starts unless a test asks for it, so unit tests stay server-free: a test that asks for a
server is marked ``integration`` here, whatever its module says, so ``make unit`` never starts one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobqueue.server import ServerBinaryNotFoundError, ValkeyServer
from tests.support.workers import WorkerPool

SERVER_FIXTURES = frozenset({"valkey_server", "valkey_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a Valkey server (directly or through a fixture) ``integration``."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _server(data_dir: Path, **kwargs: Any) -> ValkeyServer:
    try:
        server = ValkeyServer(data_dir, **kwargs)
    except ServerBinaryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = _server(tmp_path_factory.mktemp("valkey"))
    yield server
    server.stop()


@pytest.fixture
def valkey_factory(tmp_path: Path) -> Iterator[Callable[..., ValkeyServer]]:
    """Start a private server: ``valkey_factory(appendonly=True, password="s3cret")``."""
    started: list[ValkeyServer] = []

    def make(**kwargs: Any) -> ValkeyServer:
        server = _server(tmp_path / f"valkey{len(started)}", **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_url(valkey_server: ValkeyServer) -> str:
    client = redis.Redis.from_url(valkey_server.url)
    client.flushall()
    client.close()
    return valkey_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def worker_pool(redis_url: str, tmp_path: Path) -> Iterator[WorkerPool]:
    pool = WorkerPool(redis_url, tmp_path / "workers")
    yield pool
    pool.kill_all()
