"""The daemon replaces a policy that keeps failing, against a real Valkey server.

The daemon runs as in production (config text, the stream source on Valkey, the local target, the
metrics endpoint over HTTP); the policy's learned state is then broken so that every decision
raises. After ``policy_reset_after_errors`` such ticks the loop must carry on with a fresh policy
built from the same config (its knobs included), and ``/metrics`` must count the reset.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoscaler.config import parse_config
from autoscaler.daemon import Daemon
from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.loop import AlwaysLeader

pytestmark = pytest.mark.integration

CONFIG = """
host: 127.0.0.1
port: 0
targets:
  - name: reset
    source: {{kind: stream, queue: "reset:v1", redis_url: "{url}"}}
    target: {{kind: local, log_dir: "{logs}"}}
    min_replicas: 0
    max_replicas: 1
    tick_seconds: 0.2
    watch_seconds: 0
    policy: {{name: startup-aware, confidence: 0.95}}
    policy_reset_after_errors: 2
    state: {{persist: false}}
"""


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def daemon(redis_url: str, tmp_path: Path) -> Iterator[Daemon]:
    config = parse_config(CONFIG.format(url=redis_url, logs=tmp_path / "workers"), allow_local_targets=True)
    running = Daemon(config, leader=AlwaysLeader(), allow_local_targets=True).start()
    yield running
    running.stop()


def test_a_policy_that_keeps_failing_is_replaced_by_one_built_from_the_same_config(daemon: Daemon) -> None:
    loop = daemon.loops["reset"]
    wait_for(
        "a first decision", lambda: loop.last_report is not None and loop.last_report.decision is not None
    )
    broken = loop.policy
    assert isinstance(broken, StartupAwarePolicy) and broken.config.confidence == 0.95
    broken._startup = None  # type: ignore[assignment]  # learned state on which every decision raises

    wait_for("the reset", lambda: loop.policy_resets == 1)
    fresh = loop.policy
    assert isinstance(fresh, StartupAwarePolicy) and fresh is not broken
    assert fresh.config.confidence == 0.95  # the config's knobs, not the defaults
    wait_for(
        "a decision by the fresh policy",
        lambda: loop.last_report is not None and loop.last_report.error is None,
    )
    assert loop.policy is fresh and loop.policy_resets == 1

    assert daemon.port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=2) as response:
        exported = response.read().decode()
    assert 'autoscaler_policy_resets_total{target="reset"} 1.0' in exported
    assert 'autoscaler_errors_total{kind="policy-error",target="reset"} 2.0' in exported
