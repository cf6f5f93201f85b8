"""How the daemon applies a hot-reloaded config to its running loops (in-memory sources/targets)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from autoscaler.config import AppConfig, TargetConfig, parse_config
from autoscaler.daemon import Daemon
from autoscaler.loop import AlwaysLeader
from tests.unit.doubles import Clock, MemorySource, MemoryTarget

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
class Factories:
    """Builds in-memory components and remembers them, so tests can see what was rebuilt or closed."""

    clock: Clock = field(default_factory=Clock)
    sources: dict[str, list[MemorySource]] = field(default_factory=dict)
    targets: dict[str, list[MemoryTarget]] = field(default_factory=dict)
    fail_for: str | None = None

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


@pytest.fixture
def rig() -> Iterator[tuple[Daemon, Factories]]:
    factories = Factories()
    daemon = Daemon(
        parse_config(BASE),
        leader=AlwaysLeader(),
        source_factory=factories.source,
        target_factory=factories.target,
    ).start(serve_http=False)
    yield daemon, factories
    daemon.stop()


def edited(old: str, new: str) -> AppConfig:
    assert old in BASE
    return parse_config(BASE.replace(old, new, 1))


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


def test_targets_are_added_and_removed(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    text = BASE.replace("name: b", "name: c")
    daemon.apply(parse_config(text))
    assert set(daemon.loops) == {"a", "c"}
    assert made.targets["b"][0].closed and made.sources["b"][0].closed


def test_a_config_that_cannot_be_built_changes_nothing(rig: tuple[Daemon, Factories]) -> None:
    daemon, made = rig
    before = daemon.loops
    made.fail_for = "c"
    with pytest.raises(RuntimeError, match="cannot reach c"):
        daemon.apply(parse_config(BASE.replace("name: b", "name: c").replace("key: qa", "key: qa2")))
    assert daemon.loops == before
    assert not made.targets["b"][0].closed and not made.targets["a"][0].closed
    assert made.sources["a"][1].closed  # the half-built replacement was cleaned up
    assert daemon.config.targets[1].name == "b"


def test_probes_report_each_target(rig: tuple[Daemon, Factories]) -> None:
    daemon, _ = rig
    for loop in daemon.loops.values():
        loop.tick()
    ok, detail = daemon.ready()
    assert ok and set(detail["targets"]) == {"a", "b"} and detail["config"] == {"valid": True}
    healthy, _ = daemon.health()
    assert healthy
