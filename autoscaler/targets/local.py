"""Worker processes on this machine, scaled like a ReplicaSet scales pods (development and the demo).

Each worker is ``python -m worker`` (configurable) with its own ``HOSTNAME`` (so its heartbeats in
the worker registry map to it, as a pod name does) and its own ``PORT`` for the HTTP probes. The
target behaves like the Kubernetes one as far as the loop can tell:

* a process is STARTING until its ``/readyz`` answers 200 (probed in the background every
  ``probe_seconds``, like a kubelet readiness probe), then READY; the time from spawn to Ready is
  its measured startup, reported once in ``TargetState.startup_times``;
* the replica count is reconciled on every observe: a worker that crashed is replaced;
* scale-down sends SIGTERM, to the policy's picks first, then to starting, then idle workers, and
  to busy ones only when the count still requires it. A worker drains on SIGTERM (finishes its job,
  deregisters, exits 0); one still running ``termination_grace_seconds`` later is SIGKILLed, as the
  kubelet does. Draining workers are reported as DRAINING and do not count as replicas.

No orphans: workers run in their own session (a terminal Ctrl-C reaches only the daemon, which then
drains them through :meth:`close`), and each gets ``PR_SET_PDEATHSIG`` = SIGTERM so it is told to
drain even if the daemon is SIGKILLed. Linux ties that signal to the *thread* that spawned the
process, so a target must be driven by a thread that lives as long as it does (the loop's thread,
or the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from autoscaler.config import LocalTargetConfig, StreamSourceConfig, TargetConfig
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, removal_order
from autoscaler.targets.base import ActGate, LeadershipLostError, TargetState
from jobqueue.keys import PREFIX_ENV
from jobqueue.server import free_port

log = logging.getLogger("autoscaler.targets.local")

ReadinessProbe = Callable[[int], bool]
"""Whether the worker listening on this port is ready."""

_PR_SET_PDEATHSIG = 1


def http_ready(port: int) -> bool:
    """GET /readyz on the worker's probe port; any answer but 200, or none, means not ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent goes away (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved now: the child only calls it

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


@dataclass
class _Worker:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    created_at: float  # on the target's clock (epoch seconds)
    log_file: IO[bytes] | None
    ready_at: float | None = None
    startup_reported: bool = False
    draining_since: float | None = None

    @property
    def phase(self) -> PodPhase:
        if self.draining_since is not None:
            return PodPhase.DRAINING
        return PodPhase.READY if self.ready_at is not None else PodPhase.STARTING

    def view(self) -> PodView:
        return PodView(self.name, self.phase, self.created_at, ready_at=self.ready_at)


class LocalProcessTarget:
    """Runs and scales worker processes; see the module docstring for the lifecycle."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        termination_grace_seconds: float = 60.0,
        log_dir: str | Path | None = None,
        probe: ReadinessProbe = http_ready,
        probe_seconds: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        self._command = [sys.executable if part == "python" else part for part in command]
        self._env = dict(env or {})
        self._grace = termination_grace_seconds
        self._log_dir = Path(log_dir) if log_dir else None
        self._probe = probe
        self._clock = clock
        self._desired = 0
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._preexec = _die_with_parent()
        self._prober = threading.Thread(
            target=self._probe_forever, args=(probe_seconds,), name=f"probe-{name}", daemon=True
        )
        self._prober.start()

    @classmethod
    def from_config(cls, config: TargetConfig) -> LocalProcessTarget:
        """Workers for a target entry: they get the source's Redis URL, queue and key prefix unless
        env overrides."""
        spec = config.target
        if not isinstance(spec, LocalTargetConfig):
            raise TypeError(f"target {config.name!r} is not a local target")
        env = {"REDIS_URL": config.source.resolved_url()}
        if isinstance(config.source, StreamSourceConfig):
            env["QUEUE"] = config.source.queue
            env[PREFIX_ENV] = config.source.prefix
        env.update(spec.env)
        return cls(
            config.name,
            spec.command,
            env,
            termination_grace_seconds=spec.termination_grace_seconds,
            log_dir=spec.log_dir,
        )

    @property
    def name(self) -> str:
        return self._name

    # ---- the ScaleTarget protocol ----------------------------------------------------------------

    def observe(self) -> TargetState:
        with self._lock:
            self._reap()
            self._replace_missing()
            startups: list[tuple[str, float]] = []
            for worker in self._workers.values():
                if worker.ready_at is not None and not worker.startup_reported:
                    worker.startup_reported = True
                    startups.append((worker.name, worker.ready_at - worker.created_at))
            # A worker's name is its id: drawn at random for each new worker, unique among those running.
            return TargetState(
                observed_at=self._clock(),
                replicas=self._desired,
                pods=tuple(w.view() for w in self._workers.values()),
                startup_times=tuple(seconds for _, seconds in startups),
                startup_pods=tuple(name for name, _ in startups),
                pod_ids=frozenset(self._workers),
            )

    def scale(self, decision: Decision, state: TargetState, may_act: ActGate | None = None) -> int | None:
        """Set the count (None returned when it already was); stop the excess, the policy's picks first."""
        with self._lock:
            if may_act is not None and not may_act():  # one write: it happens whole or not at all
                raise LeadershipLostError("no longer the acting leader; not scaled")
            before, self._desired = self._desired, max(0, decision.desired)
            busy = {p.name for p in state.pods if p.busy}
            self._replace_missing()
            self._stop_excess(decision.remove, busy)
            return self._desired if self._desired != before else None

    def close(self, timeout: float | None = None) -> None:
        """Drain every worker (SIGTERM), wait up to ``timeout`` (default: the grace), then SIGKILL."""
        self._closed.set()
        with self._lock:
            self._desired = 0
            workers = list(self._workers.values())
            for worker in workers:
                self._terminate(worker)
            deadline = time.monotonic() + (self._grace if timeout is None else timeout)
            for worker in workers:
                try:
                    worker.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "worker did not drain in time, killing", extra={"fields": {"worker": worker.name}}
                    )
                    worker.proc.kill()
                    worker.proc.wait()
                self._forget(worker)
        self._prober.join(timeout=2)

    # ---- internals --------------------------------------------------------------------------------

    @property
    def workers(self) -> dict[str, int]:
        """Worker name -> pid of every process alive (for tests and the demo's view)."""
        with self._lock:
            return {name: w.proc.pid for name, w in self._workers.items()}

    def _active(self) -> list[_Worker]:
        return [w for w in self._workers.values() if w.draining_since is None]

    def _replace_missing(self) -> None:
        """Start workers until the desired count runs (also replaces crashed ones, as a ReplicaSet)."""
        if self._closed.is_set():
            return
        for _ in range(self._desired - len(self._active())):
            self._spawn()

    def _stop_excess(self, preferred: Sequence[str], busy: set[str]) -> None:
        """Only on scale(): choosing victims needs the busy/idle view the loop passes in."""
        active = self._active()
        excess = len(active) - self._desired
        if excess > 0:
            for worker in self._victims(active, excess, preferred, busy):
                self._terminate(worker)

    def _victims(
        self, active: list[_Worker], count: int, preferred: Sequence[str], busy: set[str]
    ) -> list[_Worker]:
        """Policy's picks, then starting and idle (newest first), then busy ones only if still needed."""
        by_name = {w.name: w for w in active}
        views = tuple(PodView(w.name, w.phase, w.created_at, busy_slots=int(w.name in busy)) for w in active)
        order = [n for n in preferred if n in by_name and n not in busy]
        order += [n for n in removal_order(views, len(views)) if n not in order]
        order += sorted(
            (n for n in busy if n in by_name and n not in order), key=lambda n: -by_name[n].created_at
        )
        return [by_name[n] for n in order[:count]]

    def _spawn(self) -> None:
        name = f"{self._name}-{secrets.token_hex(3)}"
        port = free_port()
        env = {**os.environ, **self._env, "HOSTNAME": name, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
        log_file: IO[bytes] | None = None
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self._log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            self._command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT if log_file else None,
            start_new_session=True,
            preexec_fn=self._preexec,  # noqa: PLW1509 - only calls an already-resolved prctl
        )
        self._workers[name] = _Worker(name, port, proc, self._clock(), log_file)
        log.info("worker started", extra={"fields": {"target": self._name, "worker": name, "pid": proc.pid}})

    def _terminate(self, worker: _Worker) -> None:
        if worker.draining_since is not None or worker.proc.poll() is not None:
            return
        worker.draining_since = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        log.info("worker draining", extra={"fields": {"target": self._name, "worker": worker.name}})

    def _reap(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            code = worker.proc.poll()
            if code is None:
                if worker.draining_since is not None and now - worker.draining_since > self._grace:
                    log.warning(
                        "worker ignored SIGTERM past the grace period, killing",
                        extra={"fields": {"worker": worker.name}},
                    )
                    worker.proc.kill()
                continue
            level = logging.INFO if worker.draining_since is not None else logging.WARNING
            fields = {"target": self._name, "worker": worker.name, "exit_code": code}
            log.log(level, "worker exited", extra={"fields": fields})
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        self._workers.pop(worker.name, None)
        if worker.log_file is not None:
            worker.log_file.close()

    def _probe_forever(self, period: float) -> None:
        while not self._closed.wait(period):
            with self._lock:
                starting = [w for w in self._workers.values() if w.phase is PodPhase.STARTING]
            for worker in starting:  # probe outside the lock: a slow probe must not stall a tick
                if worker.proc.poll() is None and self._probe(worker.port):
                    with self._lock:
                        if worker.ready_at is None:
                            worker.ready_at = self._clock()
                            fields = {
                                "worker": worker.name,
                                "startup": round(worker.ready_at - worker.created_at, 3),
                            }
                            log.info("worker ready", extra={"fields": fields})
