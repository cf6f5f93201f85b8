"""The daemon: one loop thread per target, the HTTP endpoints, the config watcher, the leader gate.

:class:`Daemon` turns an :class:`~autoscaler.config.AppConfig` into running loops and keeps them in
line with the file on hot reload: unchanged targets keep running untouched, a change of only the
sizing knobs (policy, SLO, bounds, tick, shadow) is applied to the running loop between two ticks,
and a change of the source or the scaled object rebuilds that target's loop. New components are
built before any running one is touched, so a reload that cannot be applied leaves everything as
it was (and the watcher reports the file as rejected).

The fields in :data:`RESTART_ONLY` (the HTTP listener, the file's poll period, leader election) are
read once, at start. A reload that changes any of them is rejected as a whole, naming them: the
running config stays fully in force until a restart, and the daemon never reports as applied a
config it does not run (before, such a reload was logged, then recorded and reported as applied
while the old elector kept acting).

Plug-in points for the other parts of the system:

* target kind ``kubernetes``: ``autoscaler.targets.kubernetes.kubernetes_target_from_config(name,
  spec, shadow=...)``, imported on first use so local mode needs no cluster libraries;
* leader election: ``autoscaler.leader.leader_election_from_config(LeaderElectionConfig)``, an object
  with ``is_leader()``, ``start()`` and ``stop()`` (stop releases the Lease); any object with
  ``is_leader()`` can be passed to :class:`Daemon` instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from autoscaler.config import (
    AppConfig,
    ConfigStatus,
    ConfigWatcher,
    KubernetesTargetConfig,
    LeaderElectionConfig,
    LocalTargetConfig,
    StreamSourceConfig,
    TargetConfig,
    load_config,
    refuse_local_targets,
)
from autoscaler.engine.registry import make_policy
from autoscaler.engine.snapshot import Policy
from autoscaler.loop import AlwaysLeader, HistoryReader, LeaderGate, LoopSettings, TargetLoop
from autoscaler.metrics import Metrics, MetricsServer
from autoscaler.sources.base import SignalSource
from autoscaler.sources.redis_source import StreamSource, make_source
from autoscaler.state_store import StateStore, build_state_store
from autoscaler.targets.base import ScaleTarget
from autoscaler.targets.local import LocalProcessTarget

log = logging.getLogger("autoscaler.daemon")

HEALTH_TICKS = 10
HEALTH_MIN_SECONDS = 120.0
"""A loop that has not ticked (failed ticks count) for HEALTH_TICKS periods and at least this long is
unhealthy. Longer than the loop's longest backoff, so an API outage alone never triggers a restart."""

RETIRE_SECONDS = 30.0
"""How long a reload (or a stop) waits for a retiring loop's thread to end: its tick in progress,
then the save of its learned state. The loop acts on nothing from the moment it is retired (see
:meth:`~autoscaler.loop.TargetLoop.retire`); a thread still running after this is abandoned (it
saves nothing either) and its successor starts."""

RESTART_ONLY = ("port", "host", "config_poll_seconds", "leader_election")
"""Top-level fields the process uses only when it starts: a reload that changes one is rejected."""


class RestartRequiredError(Exception):
    """A reload changes fields that take effect only on a restart (see :data:`RESTART_ONLY`)."""


def restart_only_changes(running: AppConfig, new: AppConfig) -> list[str]:
    """The restart-only fields that differ between ``running`` and ``new``, as dotted names."""
    changed: list[str] = []
    for name in RESTART_ONLY:
        old_value, new_value = getattr(running, name), getattr(new, name)
        if old_value == new_value:
            continue
        if isinstance(old_value, LeaderElectionConfig):
            before, after = old_value.model_dump(), new_value.model_dump()
            changed += [f"{name}.{key}" for key in before if before[key] != after[key]]
        else:
            changed.append(name)
    return changed


SourceFactory = Callable[[TargetConfig], SignalSource]
TargetFactory = Callable[[TargetConfig], ScaleTarget]
StateStoreFactory = Callable[[TargetConfig], StateStore | None]


def build_source(config: TargetConfig) -> SignalSource:
    return make_source(config.source)


def build_target(config: TargetConfig) -> ScaleTarget:
    """The scaled object a target entry names (the Kubernetes module is imported only when used)."""
    spec = config.target
    if isinstance(spec, LocalTargetConfig):
        return LocalProcessTarget.from_config(config)
    module = importlib.import_module("autoscaler.targets.kubernetes")
    return cast(ScaleTarget, module.kubernetes_target_from_config(config.name, spec, shadow=config.shadow))


def build_policy(config: TargetConfig) -> Policy:
    return make_policy(config.policy.name, config.workload(), **config.policy.knobs)


def make_leader(config: LeaderElectionConfig) -> LeaderGate:
    """The Lease-based elector when enabled, else a gate that is always open."""
    if not config.enabled:
        return AlwaysLeader()
    module = importlib.import_module("autoscaler.leader")
    return cast(LeaderGate, module.leader_election_from_config(config))


def _call_if_present(obj: object, method: str) -> None:
    function = getattr(obj, method, None)
    if callable(function):
        function()


def _history_reader(source: SignalSource, config: TargetConfig) -> HistoryReader | None:
    """Past arrivals for a warm start, when the source keeps them (our streams) and it is enabled."""
    spec = config.source
    if not isinstance(source, StreamSource) or not isinstance(spec, StreamSourceConfig):
        return None
    if spec.warm_start_seconds <= 0:
        return None
    seconds = spec.warm_start_seconds

    def read() -> tuple[tuple[float, ...], tuple[float, ...]]:
        history = source.history(seconds)
        return history.arrival_times, history.service_times

    return read


def _loop_settings(config: TargetConfig) -> LoopSettings:
    return LoopSettings(
        config.workload(),
        config.shadow,
        config.state.save_every_seconds,
        policy_reset_after_errors=config.policy_reset_after_errors,
    )


def _policy_factory(config: TargetConfig) -> Callable[[], Policy]:
    """How a loop rebuilds its policy after repeated errors: exactly as the daemon built it."""
    return functools.partial(build_policy, config)


def _rebuild_key(config: TargetConfig) -> tuple[Any, ...]:
    """What, when changed, needs a new source and target (not just new knobs on the running loop).

    The Kubernetes target decides at build time whether to tolerate another autoscaler on the same
    workload (it does in shadow mode), so there the shadow flag is part of the key. The state
    store is built with the loop too; the old loop saves on its way out and the new one restores.
    """
    shadow = config.shadow if isinstance(config.target, KubernetesTargetConfig) else None
    state = (config.state.persist, config.state.ttl_seconds)
    return (config.source, config.target, shadow, state)


def _same_workload(old: TargetConfig, new: TargetConfig) -> bool:
    """Whether a rebuilt target still scales the same workload on the same queue with the same
    state settings (only the shadow flag of a Kubernetes target changed): then the new loop
    continues from the old one's policy in memory (:meth:`TargetLoop.inherit`)."""
    return (old.source, old.target, old.state) == (new.source, new.target, new.state)


class DaemonStoppingError(RuntimeError):
    """A config reload reached the daemon after :meth:`Daemon.stop` began; nothing was applied."""


@dataclass
class _Running:
    config: TargetConfig
    loop: TargetLoop
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    started_at: float = field(default_factory=time.monotonic)  # time.monotonic, as the probe reads it


class Daemon:
    """Runs the loops of every configured target; see the module docstring."""

    def __init__(
        self,
        config: AppConfig,
        *,
        config_path: str | Path | None = None,
        port_override: int | None = None,
        metrics: Metrics | None = None,
        leader: LeaderGate | None = None,
        source_factory: SourceFactory = build_source,
        target_factory: TargetFactory = build_target,
        state_store_factory: StateStoreFactory = build_state_store,
        allow_local_targets: bool = False,
    ) -> None:
        # Local targets run their command in this process's pod: only the process that starts the
        # daemon may allow them (``run --allow-local-targets``, the demo, tests), for every config
        # it will ever run, reloads included; nothing in a config file can.
        refuse_local_targets(config, allow_local_targets)
        self._allow_local_targets = allow_local_targets
        self.config = config
        self.metrics = metrics or Metrics()
        self.leader = leader or make_leader(config.leader_election)
        self._source_factory = source_factory
        self._target_factory = target_factory
        self._state_store_factory = state_store_factory
        self._running: dict[str, _Running] = {}
        # What the probes and ``loops`` read, replaced whole under the lock and read without it: a
        # reload holds the lock while it waits for loops (a tick in progress, a retiring thread),
        # and a liveness probe that waited with it would get the daemon restarted mid-reload.
        self._view: tuple[_Running, ...] = ()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._server: MetricsServer | None = None
        self._watcher = (
            ConfigWatcher(
                config_path,
                config,
                self.apply,
                load=functools.partial(
                    load_config, port=port_override, allow_local_targets=allow_local_targets
                ),
                on_status=self._config_status,
            )
            if config_path is not None
            else None
        )
        self._watch_thread: threading.Thread | None = None
        self.metrics.config_valid.set(1)

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self, serve_http: bool = True) -> Daemon:
        """Serve HTTP, compete for leadership, start every loop and the config watcher.

        The port is bound first: a port in use then stops a daemon that has started nothing else
        (it used to leave the leader election competing, and renewing a Lease, in a process that
        was about to exit). Anything failing later stops what had started.
        """
        if serve_http:
            self._server = MetricsServer(
                self.config.host, self.config.port, self.metrics, self.health, self.ready
            ).start()
            log.info("serving /metrics /healthz /readyz", extra={"fields": {"port": self._server.port}})
        try:
            _call_if_present(self.leader, "start")
            with self._lock:
                built = self._build_all(self.config.targets)
                for running in built.values():
                    self._start(running)
            if self._watcher is not None:
                watcher = self._watcher
                self._watch_thread = threading.Thread(
                    target=watcher.run,
                    args=(self._stop, self.config.config_poll_seconds),
                    name="config",
                    daemon=True,
                )
                self._watch_thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def watcher(self) -> ConfigWatcher | None:
        return self._watcher

    @property
    def port(self) -> int | None:
        return self._server.port if self._server else None

    @property
    def loops(self) -> dict[str, TargetLoop]:
        return {r.config.name: r.loop for r in self._view}

    def _publish(self) -> None:
        """Make the running loops as they are now what the probes see (call with the lock held)."""
        self._view = tuple(self._running.values())

    def stop(self) -> None:
        """Stop every loop, drain local workers, release the Lease, close the HTTP server."""
        self._stop.set()
        if self._watch_thread is not None:  # a reload in progress ends first (refused, see apply)
            self._watch_thread.join(timeout=5)
        with self._lock:
            retiring = list(self._running.values())
            self._running.clear()
            self._publish()
            for running in retiring:
                self._retire(running)
        _call_if_present(self.leader, "stop")
        if self._server is not None:
            self._server.stop()

    # ---- building and reconciling ---------------------------------------------------------------------

    def _build(self, config: TargetConfig, reuse: _Running | None = None) -> _Running:
        """A loop for ``config``; ``reuse`` donates its source and target when only knobs changed."""
        policy = build_policy(config)
        settings = _loop_settings(config)
        if reuse is not None:
            source, target = reuse.loop.source, reuse.loop.target
        else:
            source = self._source_factory(config)
            try:
                target = self._target_factory(config)
            except Exception:
                source.close()
                raise
        try:
            store = self._state_store_factory(config)
        except Exception:
            if reuse is None:
                source.close()
                target.close()
            raise
        loop = TargetLoop(
            config.name,
            source,
            target,
            policy,
            settings,
            leader=self.leader,
            observer=self.metrics,
            history=_history_reader(source, config),
            state_store=store,
            policy_factory=_policy_factory(config),
        )
        return _Running(config, loop)

    def _build_all(self, configs: list[TargetConfig]) -> dict[str, _Running]:
        built: dict[str, _Running] = {}
        try:
            for config in configs:
                built[config.name] = self._build(config)
        except Exception:
            for running in built.values():
                self._close_components(running)
            raise
        return built

    def apply(self, config: AppConfig) -> None:
        """Reconcile the running loops with a new config (the watcher's callback).

        Raises :class:`RestartRequiredError`, changing nothing, when a :data:`RESTART_ONLY` field
        differs from the running config's (the watcher then reports the file as rejected).
        """
        with self._lock:
            if self._stop.is_set():
                # The watcher waited for the lock while stop() retired every loop: building them
                # now would leave loops acting on the workloads after the daemon said it stopped.
                raise DaemonStoppingError("the daemon is stopping: this file was not applied")
            refuse_local_targets(config, self._allow_local_targets)
            changed = restart_only_changes(self.config, config)
            if changed:
                raise RestartRequiredError(
                    f"{', '.join(changed)} changed: takes effect only on a restart; nothing of this "
                    "file was applied, the running config stays in force until the daemon restarts"
                )
            fresh: dict[str, _Running] = {}
            retuned: dict[str, TargetConfig] = {}
            try:
                for target in config.targets:
                    old = self._running.get(target.name)
                    if old is None or _rebuild_key(old.config) != _rebuild_key(target):
                        fresh[target.name] = self._build(target)
                    elif old.config != target:
                        build_policy(target)  # fail now, before anything running is touched
                        retuned[target.name] = target
            except Exception:
                for running in fresh.values():
                    self._close_components(running)
                raise
            names = {t.name for t in config.targets}
            leaving = [n for n in self._running if n not in names or n in fresh]
            retiring = [(self._running.pop(name), name not in names) for name in leaving]
            self._publish()
            for running, forget in retiring:
                self._retire(running, forget_metrics=forget)
                successor = fresh.get(running.config.name)
                if successor is not None and _same_workload(running.config, successor.config):
                    successor.loop.inherit(running.loop)
            for name, target in retuned.items():
                running = self._running[name]
                running.loop.reconfigure(
                    _loop_settings(target), build_policy(target), policy_factory=_policy_factory(target)
                )
                running.config = target
                log.info("target retuned", extra={"fields": {"target": name}})
            for running in fresh.values():
                self._start(running)
            logging.getLogger().setLevel(config.log_level)
            self.config = config

    def _start(self, running: _Running) -> None:
        _call_if_present(running.loop.target, "start")
        running.thread = threading.Thread(
            target=self._run_loop, args=(running,), name=f"loop-{running.config.name}", daemon=True
        )
        self._running[running.config.name] = running
        self._publish()
        running.thread.start()
        log.info("target started", extra={"fields": {"target": running.config.name}})

    def _run_loop(self, running: _Running) -> None:
        # The thread that starts local workers must outlive them (PR_SET_PDEATHSIG): this one does.
        running.loop.run(running.stop)

    def _retire(self, running: _Running, forget_metrics: bool = True) -> None:
        # First of all: from here on the loop writes nothing to the target, and the tick it may be
        # in (waited for below, up to RETIRE_SECONDS) acts on nothing. Before, that tick went on to
        # scale while the reload waited for it, or after its successor had started.
        running.loop.retire()
        running.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=RETIRE_SECONDS)
            if running.thread.is_alive():
                running.loop.abandon()
                log.warning(
                    "target loop still busy; left behind, acting on nothing",
                    extra={"fields": {"target": running.config.name, "waited_seconds": RETIRE_SECONDS}},
                )
        self._close_components(running)
        if forget_metrics:
            self.metrics.forget_target(running.config.name)
        log.info("target stopped", extra={"fields": {"target": running.config.name}})

    @staticmethod
    def _close_components(running: _Running) -> None:
        for component in (running.loop.target, running.loop.source, running.loop.state_store):
            if component is None:
                continue
            try:
                component.close()
            except Exception:
                log.exception("closing failed", extra={"fields": {"target": running.config.name}})

    # ---- probes -------------------------------------------------------------------------------------

    def _config_status(self, status: ConfigStatus) -> None:
        self.metrics.config_valid.set(1 if status.valid else 0)
        self.metrics.config_reloads.labels("applied" if status.valid else "rejected").inc()

    def _targets_detail(self) -> dict[str, dict[str, Any]]:
        # Measured on time.monotonic: against the wall clock, an NTP step forward of a few minutes
        # failed the liveness probe of every healthy loop, and a step back hid a hung one for as
        # long as the step.
        now = time.monotonic()
        detail: dict[str, dict[str, Any]] = {}
        for r in self._view:
            report = r.loop.last_report
            tick = r.config.tick_seconds
            reported = r.loop.reported_monotonic  # set with last_report, just before it
            since = now - (r.started_at if reported is None else reported)
            entry: dict[str, Any] = {
                "alive": bool(r.thread and r.thread.is_alive()),
                "ticked": report is not None,
                "seconds_since_tick": round(since, 3),
                "healthy": since <= max(HEALTH_MIN_SECONDS, HEALTH_TICKS * tick),
                "shadow": r.config.shadow,
            }
            if report is not None:
                entry["error"] = report.error
                if report.snapshot is not None and report.decision is not None:
                    entry["stale"] = report.snapshot.stale
                    entry["desired"] = report.decision.desired
                    entry["current"] = report.snapshot.current_replicas
                    entry["reason"] = report.decision.reason
            detail[r.config.name] = entry
        return detail

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Live unless a loop thread died or stopped ticking (a restart is then the cure)."""
        targets = self._targets_detail()
        ok = not self._stop.is_set() and all(t["alive"] and t["healthy"] for t in targets.values())
        return ok, {"targets": targets}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready once every loop has ticked.

        A rejected config reload does NOT make the daemon unready: it keeps scaling with the previous
        config, and an unready pod would drop out of its Service and take its metrics (including
        ``autoscaler_config_valid``) out of Prometheus exactly when they matter. The detail says
        ``degraded`` and carries the error instead.
        """
        targets = self._targets_detail()
        ok = not self._stop.is_set() and all(t["ticked"] for t in targets.values())
        status = self._watcher.status if self._watcher else None
        config: dict[str, Any] = (
            {"valid": True}
            if status is None
            else {
                "valid": status.valid,
                "path": status.path,
                "error": status.error,
                "loaded_at": status.loaded_at,
            }
        )
        detail: dict[str, Any] = {"config": config, "leader": self.leader.is_leader(), "targets": targets}
        if not config["valid"]:
            detail["degraded"] = "config rejected; running with the previous one"
        return ok, detail

    # ---- running as a process --------------------------------------------------------------------------

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set (signal handlers set it), waking up so signals are handled."""
        while not stop.wait(1.0):
            pass
