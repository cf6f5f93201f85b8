"""How the daemon applies a hot-reloaded config to its running loops (in-memory sources/targets)."""

from __future__ import annotations

import functools
import socket
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import AppConfig, ConfigError, TargetConfig, load_config, parse_config
from autoscaler.daemon import Daemon
from autoscaler.engine.policy import StartupAwarePolicy
from autoscaler.loop import AlwaysLeader
from tests.unit.doubles import Clock, MemorySource, MemoryStateStore, MemoryTarget

# BASE's targets are local ones (the in-memory factories stand in for them): allowed, as by
# ``run --allow-local-targets``, the demo and tests, and so on every reload of these daemons.
parse_local = functools.partial(parse_config, allow_local_targets=True)
load_local = functools.partial(load_config, allow_local_targets=True)

BASE = textwrap.dedent(
    """
    targets:
      - name: a
        source: {kind: list, key: qa, redis_url: "redis://127.0.0.1:1/0"}
        target: {kind: local}
        tick_seconds: 60
      - name: b
        source: {kind: list, key: qb, redis_url: "redis://127.0.0.1:1/0"}
        target: {kind: local}
        tick_seconds: 60
    """
)


@dataclass
class Connection:
    """One loop's handle on a target's saved state, which outlives it (as a Redis key does)."""

    shared: MemoryStateStore
    closed: bool = False

    @property
    def location(self) -> str:
        return self.shared.location

    def load(self) -> Mapping[str, Any] | None:
        return self.shared.load()

    def save(self, document: Mapping[str, Any]) -> None:
        self.shared.save(document)

    def close(self) -> None:
        self.closed = True


@dataclass
class Factories:
    """Builds in-memory components and remembers them, so tests can see what was rebuilt or closed."""

    clock: Clock = field(default_factory=lambda: Clock(time.time()))  # the loops read the wall clock
    sources: dict[str, list[MemorySource]] = field(default_factory=dict)
    targets: dict[str, list[MemoryTarget]] = field(default_factory=dict)
    fail_for: str | None = None
    saved: dict[str, MemoryStateStore] = field(default_factory=dict)
    connections: dict[str, list[Connection]] = field(default_factory=dict)

    def source(self, config: TargetConfig) -> MemorySource:
        made = MemorySource(self.clock)
        self.sources.setdefault(config.name, []).append(made)
        return made

    def target(self, config: TargetConfig) -> MemoryTarget:
        if config.name == self.fail_for:
            raise RuntimeError(f"cannot reach {config.name}")
        made = MemoryTarget(self.clock)
        self.targets.setdefault(config.name, []).append(made)
        return made

    def state_store(self, config: TargetConfig) -> Connection:
        made = Connection(self.saved.setdefault(config.name, MemoryStateStore()))
        self.connections.setdefault(config.name, []).append(made)
        return made


@pytest.fixture
def rig() -> Iterator[tuple[Daemon, Factories]]:
    factories = Factories()
    daemon = Daemon(
        parse_local(BASE),
        allow_local_targets=True,
        leader=AlwaysLeader(),
        source_factory=factories.source,
        target_factory=factories.target,
        state_store_factory=factories.state_store,
    ).start(serve_http=False)
    yield daemon, factories
    daemon.stop()


def watching(path: Path, config: AppConfig, made: Factories | None = None, **kwargs: Any) -> Daemon:
    """A started daemon (no HTTP) whose config came from ``path``, which it watches for reloads
    (local targets allowed unless ``allow_local_targets=False`` is passed)."""
    made = made or Factories()
    return Daemon(
        config,
        config_path=path,
        source_factory=made.source,
        target_factory=made.target,
        state_store_factory=made.state_store,
        **{"allow_local_targets": True, **kwargs},
    ).start(serve_http=False)


def edited(old: str, new: str) -> AppConfig:
    assert old in BASE
    return parse_local(BASE.replace(old, new, 1))


def test_knob_changes_retune_the_running_loop_without_rebuilding(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    loop_a, loop_b = daemon.loops["a"], daemon.loops["b"]
    daemon.apply(edited("tick_seconds: 60", "tick_seconds: 60\n    shadow: true\n    max_replicas: 9"))
    assert daemon.loops["a"] is loop_a and daemon.loops["b"] is loop_b
    assert loop_a.settings.shadow and loop_a.settings.workload.max_replicas == 9
    assert len(made.sources["a"]) == 1 and not made.targets["a"][0].closed


def test_a_changed_source_rebuilds_that_target_only(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    loop_b = daemon.loops["b"]
    daemon.apply(edited("key: qa", "key: qa2"))
    assert len(made.sources["a"]) == 2 and made.sources["a"][0].closed and made.targets["a"][0].closed
    assert daemon.loops["b"] is loop_b


def first_decision(daemon: Daemon, name: str) -> None:
    deadline = time.monotonic() + 5
    while daemon.loops[name].last_report is None:
        assert time.monotonic() < deadline, f"loop {name} never ticked"
        time.sleep(0.01)


def test_a_rebuilt_loop_continues_from_the_state_the_old_one_saved(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    first_decision(daemon, "a")
    old = daemon.loops["a"].policy
    assert isinstance(old, StartupAwarePolicy)
    daemon.apply(edited("key: qa", "key: qa2"))
    first_decision(daemon, "a")
    new = daemon.loops["a"].policy
    assert new is not old and isinstance(new, StartupAwarePolicy)
    saved = made.saved["a"].document
    assert saved is not None  # the old loop saved on its way out ...
    old_connection, new_connection = made.connections["a"]
    assert old_connection.closed and not new_connection.closed

    # ... and the new one started from it: its pool history begins with the old loop's ticks.
    def pool_ticks(document: Mapping[str, Any]) -> list[float]:
        return [row[0] for row in document["state"]["_pool"]["object"]["_ticks"]["deque"]]

    old_ticks = pool_ticks(saved)
    assert old_ticks and pool_ticks(new.export_state())[: len(old_ticks)] == old_ticks


def test_targets_are_added_and_removed(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    text = BASE.replace("name: b", "name: c")
    daemon.apply(parse_local(text))
    assert set(daemon.loops) == {"a", "c"}
    assert made.targets["b"][0].closed and made.sources["b"][0].closed


def test_a_config_that_cannot_be_built_changes_nothing(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    before = daemon.loops
    made.fail_for = "c"
    with pytest.raises(RuntimeError, match="cannot reach c"):
        daemon.apply(parse_local(BASE.replace("name: b", "name: c").replace("key: qa", "key: qa2")))
    assert daemon.loops == before
    assert not made.targets["b"][0].closed and not made.targets["a"][0].closed
    assert made.sources["a"][1].closed  # the half-built replacement was cleaned up
    assert daemon.config.targets[1].name == "b"


def test_a_reload_changing_a_restart_only_field_is_rejected_whole(tmp_path: Path) -> None:
    """Leader election, the listener and the poll period are read only at start. A reload changing one
    (leader election enabled before scaling to 2 replicas, say) was logged, then recorded and reported
    as applied while the old gate went on acting: the new replica took the free Lease and both scaled.
    Such a file is rejected as a whole now, naming the fields, and reported as any rejected file is;
    the running config stays in force, and each later file is judged against it."""
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    daemon = watching(path, parse_local(BASE))
    sample = daemon.metrics.registry.get_sample_value
    watcher = daemon.watcher
    assert watcher is not None
    try:
        leader, loops = daemon.leader, daemon.loops
        retuned = BASE.replace("tick_seconds: 60", "tick_seconds: 30", 1)
        for port in (9191, 9292):  # still rejected at the next change of the file
            path.write_text(f"port: {port}\nleader_election: {{enabled: true}}\n{retuned}")
            assert not watcher.check()
            assert isinstance(daemon.leader, AlwaysLeader) and daemon.leader is leader
            assert daemon.loops == loops and daemon.loops["a"].settings.workload.tick_seconds == 60
            assert daemon.config.port == 9090 and not daemon.config.leader_election.enabled
            _, detail = daemon.ready()
            error = detail["config"]["error"]
            assert detail["config"]["valid"] is False and "degraded" in detail
            assert "port, leader_election.enabled changed" in error and "restart" in error, error
            assert sample("autoscaler_config_valid") == 0
        assert sample("autoscaler_config_reloads_total", {"result": "rejected"}) == 2

        path.write_text(retuned)  # the same change without the restart-only fields applies
        assert watcher.check()
        assert daemon.loops["a"].settings.workload.tick_seconds == 30 and daemon.ready()[1]["config"]["valid"]
        assert sample("autoscaler_config_valid") == 1
        assert sample("autoscaler_config_reloads_total", {"result": "applied"}) == 1
    finally:
        daemon.stop()


def test_probes_report_each_target(rig: tuple[Daemon, Factories]) -> None:
    daemon, _ = rig
    for loop in daemon.loops.values():
        loop.tick()
    ok, detail = daemon.ready()
    assert ok and set(detail["targets"]) == {"a", "b"} and detail["config"] == {"valid": True}
    healthy, _ = daemon.health()
    assert healthy


def test_the_liveness_probe_does_not_follow_a_wall_clock_step(
    rig: tuple[Daemon, Factories], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NTP step of the wall clock is not time passing: a step forward must not fail the probe of
    loops that tick (the kubelet would restart a healthy daemon), nor a step back hide a loop that
    stopped ticking for the length of the step."""
    daemon, _ = rig
    for loop in daemon.loops.values():
        loop.tick()
    real_time, real_monotonic = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600.0)
    healthy, detail = daemon.health()
    assert healthy, detail
    assert all(t["seconds_since_tick"] < 60 for t in detail["targets"].values()), detail

    # An hour later by the monotonic clock with no tick since, the wall clock stepped back an hour.
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 3600.0)
    healthy, detail = daemon.health()
    assert not healthy, detail
    assert all(t["seconds_since_tick"] >= 3600 for t in detail["targets"].values()), detail


def test_probes_answer_while_a_reload_waits_for_a_tick_in_progress(rig: tuple[Daemon, Factories]) -> None:
    """A reload holds the daemon's lock while it waits for the loops; the liveness probe must not
    wait with it, or a slow API server during a reload gets the daemon restarted."""
    daemon, made = rig
    first_decision(daemon, "a")
    hung = made.targets["a"][0].hold = threading.Event()
    ticking = threading.Thread(target=daemon.loops["a"].tick)  # holds the loop's lock, hung in observe
    ticking.start()
    reloading = threading.Thread(target=daemon.apply, args=(edited("tick_seconds: 60", "tick_seconds: 30"),))
    try:
        reloading.start()  # waits for the tick, holding the daemon's lock
        time.sleep(0.2)
        assert reloading.is_alive()
        answers: list[bool] = []
        probe = threading.Thread(target=lambda: answers.append(daemon.health()[0] and daemon.ready()[0]))
        probe.start()
        probe.join(timeout=2)
        assert answers == [True], "a probe waited for the reload"
        assert set(daemon.loops) == {"a", "b"}
    finally:
        hung.set()
        ticking.join(5)
        reloading.join(5)
    assert daemon.loops["a"].settings.workload.tick_seconds == 30


def _hung_tick_deciding_a_scale_up(daemon: Daemon, made: Factories) -> tuple[MemoryTarget, threading.Event]:
    """Loop a's tick in progress, hung in the target's read, about to decide a scale-up."""
    first_decision(daemon, "a")
    old = made.targets["a"][0]
    made.sources["a"][0].waiting = 50  # the tick, once its read returns, scales up
    hung = old.hold = threading.Event()
    threading.Thread(target=daemon.loops["a"].tick, daemon=True).start()
    deadline = time.monotonic() + 5
    while old.observes < 2:  # the tick is in the read
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return old, hung


def test_a_loop_replaced_by_a_reload_does_not_act_while_the_reload_waits_for_it(
    rig: tuple[Daemon, Factories],
) -> None:
    """The reload waits for a retiring loop's tick in progress: that tick must not scale any more."""
    daemon, made = rig
    old, hung = _hung_tick_deciding_a_scale_up(daemon, made)
    scaled = len(old.scaled)
    reloading = threading.Thread(target=daemon.apply, args=(edited("key: qa", "key: qa2"),))
    reloading.start()  # retires loop a: waits for its tick
    time.sleep(0.2)
    hung.set()  # the read returns while the reload waits
    reloading.join(10)
    assert not reloading.is_alive()
    assert len(old.scaled) == scaled, "the retired loop scaled after the reload had replaced it"
    assert made.saved["a"].document is not None  # it did save its state on its way out


def test_a_loop_replaced_by_a_reload_does_not_act_after_the_wait_for_it_gave_up(
    rig: tuple[Daemon, Factories], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick hung longer than the reload waits (an API server that does not answer) ends after the
    new loop has started: it must neither scale nor save over what the new loop restored."""
    daemon, made = rig
    monkeypatch.setattr("autoscaler.daemon.RETIRE_SECONDS", 0.2, raising=False)
    old, hung = _hung_tick_deciding_a_scale_up(daemon, made)
    scaled = len(old.scaled)
    daemon.apply(edited("key: qa", "key: qa2"))
    first_decision(daemon, "a")  # the new loop runs
    saves = made.saved["a"].saves
    hung.set()  # the old tick's read returns now
    time.sleep(0.3)
    assert len(old.scaled) == scaled, "the retired loop scaled after the new one had started"
    assert made.saved["a"].saves == saves


def test_a_reload_keeps_the_port_the_command_line_gave(tmp_path: Path) -> None:
    """``run --port N`` overrides the file's port. Every reload read the file without it, saw the
    port "changed" from N, and was rejected as needing a restart: no edit of the ConfigMap was
    ever applied while the daemon ran with --port. The override now holds for every version of
    the file, so a reload compares like with like."""
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    daemon = watching(path, load_local(path, port=9191), port_override=9191)
    watcher = daemon.watcher
    assert watcher is not None
    try:
        path.write_text(BASE.replace("tick_seconds: 60", "tick_seconds: 30", 1))
        assert watcher.check(), daemon.ready()[1]["config"]
        assert daemon.loops["a"].settings.workload.tick_seconds == 30 and daemon.config.port == 9191
    finally:
        daemon.stop()


def test_a_config_file_that_turns_to_non_utf8_is_rejected_naming_it(tmp_path: Path) -> None:
    """A reload reads the file as loading does (``load_config``): bytes that are not UTF-8 are the
    same one-line ConfigError as at start, not "cannot apply: 'utf-8' codec can't decode ..."."""
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    daemon = watching(path, parse_local(BASE))
    watcher = daemon.watcher
    assert watcher is not None
    try:
        path.write_bytes(BASE.encode() + b"# caf\xe9\n")
        assert not watcher.check()
        error = daemon.ready()[1]["config"]["error"]
        assert error == f"{path}: not UTF-8 text (byte 0xe9 at offset {len(BASE.encode()) + 5})", error
    finally:
        daemon.stop()


@dataclass
class RecordingLeader:
    """A leader gate that records whether it was ever started and whether it was stopped."""

    started: bool = False
    stopped: bool = False

    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def test_a_port_in_use_stops_the_start_before_the_leader_election_competes() -> None:
    """`run --port N` with N taken exited while the election thread went on renewing a Lease."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_local(BASE + f"host: 127.0.0.1\nport: {port}\n")
        leader, made = RecordingLeader(), Factories()
        daemon = Daemon(
            config,
            allow_local_targets=True,
            leader=leader,
            source_factory=made.source,
            target_factory=made.target,
        )
        with pytest.raises(OSError):
            daemon.start()
    assert not leader.started
    assert made.targets == {}  # no loop was built either


def test_a_start_that_fails_after_the_port_stops_what_had_started() -> None:
    made = Factories(fail_for="b")
    leader = RecordingLeader()
    daemon = Daemon(
        parse_local(BASE + "host: 127.0.0.1\nport: 0\n"),
        allow_local_targets=True,
        leader=leader,
        source_factory=made.source,
        target_factory=made.target,
        state_store_factory=made.state_store,
    )
    with pytest.raises(RuntimeError, match="cannot reach b"):
        daemon.start()
    assert leader.started and leader.stopped
    port = daemon.port
    assert port is not None
    with pytest.raises(ConnectionRefusedError):  # the HTTP server is closed
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


SHADOWED = textwrap.dedent(
    """
    targets:
      - name: a
        source: {kind: list, key: qa, redis_url: "redis://127.0.0.1:1/0"}
        target: {kind: kubernetes, namespace: default, name: workers}
        tick_seconds: 60
        shadow: SHADOW
    """
)


def shadowed(made: Factories) -> Daemon:
    """A started daemon (no HTTP) running SHADOWED's one Kubernetes target in shadow mode."""
    return Daemon(
        parse_config(SHADOWED.replace("SHADOW", "true")),
        leader=AlwaysLeader(),
        source_factory=made.source,
        target_factory=made.target,
        state_store_factory=made.state_store,
    ).start(serve_http=False)


def test_a_shadow_kubernetes_target_switched_live_keeps_what_it_learned() -> None:
    """The migration from KEDA: shadow beside it, then live. The switch rebuilds a Kubernetes
    target, and a shadow loop saves nothing, so the live loop started cold: warm-ups measured at
    90 s in shadow were estimated at the 30 s default again the moment it began to act."""
    made = Factories()
    daemon = shadowed(made)
    try:
        shadow = daemon.loops["a"]
        for _ in range(4):
            made.targets["a"][0].startups.append(90.0)
            shadow.tick()
        assert shadow.policy.startup_estimate == 90.0  # type: ignore[attr-defined]
        assert made.saved["a"].document is None  # a shadow loop saves nothing
        daemon.apply(parse_config(SHADOWED.replace("SHADOW", "false")))
        live = daemon.loops["a"]
        assert live is not shadow and made.targets["a"][1] is live.target  # rebuilt
        live.tick()
        assert live.policy.startup_estimate == 90.0  # type: ignore[attr-defined]
        assert made.saved["a"].document is not None  # and the live loop saves it
    finally:
        daemon.stop()


def test_a_shadow_target_moved_to_another_workload_starts_from_the_store_not_the_old_loop() -> None:
    made = Factories()
    daemon = shadowed(made)
    try:
        for _ in range(4):
            made.targets["a"][0].startups.append(90.0)
            daemon.loops["a"].tick()
        other = SHADOWED.replace("SHADOW", "false").replace("name: workers", "name: other-workers")
        daemon.apply(parse_config(other))
        daemon.loops["a"].tick()
        assert daemon.loops["a"].policy.startup_estimate == 30.0  # type: ignore[attr-defined]
    finally:
        daemon.stop()


def test_a_reload_that_reaches_the_daemon_after_stop_starts_nothing(tmp_path: Path) -> None:
    """The watcher, waiting for the lock while stop() retired the loops, then built and started
    new ones that nobody stopped: they went on scaling after the daemon said it had stopped."""
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    daemon = watching(path, load_local(path), leader=AlwaysLeader())
    daemon.stop()
    path.write_text(BASE.replace("key: qa", "key: qa2", 1))  # the ConfigMap changed as SIGTERM came
    assert daemon.watcher is not None
    assert not daemon.watcher.check()
    assert "stopping" in (daemon.watcher.status.error or "")
    alive = [t.name for t in threading.enumerate() if t.name.startswith("loop-") and t.is_alive()]
    assert not daemon.loops and not alive


KUBE_ONLY = SHADOWED.replace("SHADOW", "true")


def test_a_daemon_not_allowed_local_targets_refuses_them_at_start_and_on_every_reload(
    tmp_path: Path,
) -> None:
    """Local targets run their command in the daemon's pod; only the process that starts it may
    allow them. A config validated elsewhere with the permission is refused by a daemon without it,
    and a ConfigMap edit (a hot reload) adding one is rejected, naming the field, nothing built."""
    with pytest.raises(ConfigError, match=r"targets\[0\]\.target\.kind: local targets start"):
        Daemon(parse_local(BASE), leader=AlwaysLeader())
    path = tmp_path / "config.yaml"
    path.write_text(KUBE_ONLY)
    made = Factories()
    daemon = watching(path, load_config(path), made, allow_local_targets=False)
    watcher = daemon.watcher
    assert watcher is not None
    try:
        path.write_text(KUBE_ONLY + BASE.removeprefix("\ntargets:\n").replace("name: a", "name: c"))
        assert not watcher.check()
        assert set(daemon.loops) == {"a"} and set(made.targets) == {"a"}  # nothing built or started
        _, detail = daemon.ready()
        assert detail["config"]["valid"] is False
        assert "targets[1].target.kind: local targets" in detail["config"]["error"]
        assert "--allow-local-targets" in detail["config"]["error"]
        assert "targets[2].target.kind: local targets" in detail["config"]["error"]
        assert detail["config"]["error"].count("targets[") == 2, detail  # no other problem
        with pytest.raises(ConfigError, match="local targets"):  # applied directly, too
            daemon.apply(parse_local(BASE))
        assert set(made.targets) == {"a"}
    finally:
        daemon.stop()
