"""LocalProcessTarget with a tiny stand-in worker program (real processes, no Redis): readiness,
startup measurement, which process a scale-down stops, crash replacement and a clean close."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from autoscaler.config import parse_config
from autoscaler.engine.snapshot import Decision, PodPhase
from autoscaler.targets.base import TargetState
from autoscaler.targets.local import LocalProcessTarget

# Ready (``/readyz`` 200) after READY_AFTER seconds; exits 0 on SIGTERM, after DRAIN seconds.
FAKE_WORKER = textwrap.dedent(
    """
    import http.server, os, signal, sys, threading, time
    born = time.monotonic()
    ready_after = float(os.environ.get("READY_AFTER", "0.3"))
    drain = float(os.environ.get("DRAIN", "0"))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if time.monotonic() - born >= ready_after else 503)
            self.end_headers()
        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    def stop(*_):
        time.sleep(drain)
        os._exit(0)
    if os.environ.get("IGNORE_TERM") != "1":
        signal.signal(signal.SIGTERM, stop)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def make_target(tmp_path: Path) -> Iterator[Callable[..., LocalProcessTarget]]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    made: list[LocalProcessTarget] = []

    def make(grace: float = 5.0, **env: str) -> LocalProcessTarget:
        target = LocalProcessTarget(
            "fake", [sys.executable, str(script)], env, termination_grace_seconds=grace, probe_seconds=0.05
        )
        made.append(target)
        return target

    yield make
    for target in made:
        target.close(timeout=2)


def scale(
    target: LocalProcessTarget, desired: int, busy: set[str] | None = None, remove: tuple[str, ...] = ()
) -> None:
    """What the loop does: observe, mark busy pods from heartbeats, scale."""
    state = target.observe()
    pods = tuple(replace(p, busy_slots=int(p.name in (busy or set()))) for p in state.pods)
    target.scale(
        Decision(desired, "test", remove=remove), TargetState(state.observed_at, state.replicas, pods)
    )


def phases(target: LocalProcessTarget) -> dict[str, PodPhase]:
    return {p.name: p.phase for p in target.observe().pods}


def test_workers_start_become_ready_and_report_their_startup_once(
    make_target: Callable[..., LocalProcessTarget],
) -> None:
    target = make_target(READY_AFTER="0.4")
    scale(target, 2)
    state = target.observe()
    assert state.replicas == 2 and [p.phase for p in state.pods] == [PodPhase.STARTING] * 2
    reported: list[float] = []

    def both_reported() -> bool:
        reported.extend(target.observe().startup_times)
        return len(reported) >= 2

    wait_for(both_reported)
    assert len(reported) == 2 and all(0.4 <= t < 5 for t in reported)
    assert set(phases(target).values()) == {PodPhase.READY}
    assert target.observe().startup_times == ()  # each reported once


def test_scale_returns_the_count_it_set_or_none_when_unchanged(
    make_target: Callable[..., LocalProcessTarget],
) -> None:
    target = make_target()
    state = target.observe()
    assert target.scale(Decision(2, "test"), state) == 2
    assert target.scale(Decision(2, "test"), target.observe()) is None
    assert target.scale(Decision(1, "test"), target.observe()) == 1


def test_scale_down_stops_idle_before_busy_and_drains(make_target: Callable[..., LocalProcessTarget]) -> None:
    target = make_target(DRAIN="0.3")  # slow enough to be seen DRAINING
    scale(target, 3)
    wait_for(lambda: list(phases(target).values()).count(PodPhase.READY) == 3)
    names = sorted(target.workers)
    busy = {names[0], names[1]}
    scale(target, 2, busy=busy)
    draining = [n for n, ph in phases(target).items() if ph is PodPhase.DRAINING]
    assert draining == [names[2]]  # the idle one
    wait_for(lambda: names[2] not in phases(target))
    scale(target, 1, busy=busy)  # only busy ones left: the count requires one to drain
    wait_for(lambda: len(phases(target)) == 1)
    assert set(target.workers) < busy and target.observe().replicas == 1


def test_a_crashed_worker_is_replaced(make_target: Callable[..., LocalProcessTarget]) -> None:
    target = make_target()
    scale(target, 1)
    ((name, pid),) = target.workers.items()
    os.kill(pid, 9)
    wait_for(lambda: not alive(pid))
    state = target.observe()
    assert len(state.pods) == 1 and state.pods[0].name != name


def test_close_stops_everything_and_kills_a_worker_that_ignores_sigterm(
    make_target: Callable[..., LocalProcessTarget],
) -> None:
    target = make_target(IGNORE_TERM="1")
    scale(target, 2)
    pids = list(target.workers.values())
    target.close(timeout=0.5)
    assert not any(alive(pid) for pid in pids)
    assert target.workers == {}


def test_workers_of_a_stream_target_get_its_url_queue_and_key_prefix() -> None:
    """The API and the workers key every job under KEY_PREFIX: a local worker left on the default
    prefix while the source watches another serves nothing, and the autoscaler scales up for ever."""
    config = parse_config(
        textwrap.dedent(
            """
            targets:
              - name: t
                source: {kind: stream, queue: "m:v1", prefix: tenant1, redis_url: "redis://127.0.0.1:1/0"}
                target: {kind: local, env: {MODEL_SETUP_SECONDS: "0"}}
            """
        ),
        allow_local_targets=True,
    )
    target = LocalProcessTarget.from_config(config.targets[0])
    try:
        assert target._env == {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "QUEUE": "m:v1",
            "KEY_PREFIX": "tenant1",
            "MODEL_SETUP_SECONDS": "0",
        }
    finally:
        target.close()
