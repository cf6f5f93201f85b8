"""The processes the demo runs: a Redis-protocol server, the job API, the autoscaler daemon.

Start order is dependency order (Redis, API, daemon with its workers); :meth:`Stack.close` stops in
the reverse order: the API first (no new jobs), then the daemon, which drains every worker (each
finishes and records its job), and the Redis server last, so nothing is cut off mid-write.

The API and the embedded server run in sessions of their own, like the workers: a Ctrl-C in the
terminal reaches only the demo, which then stops them in that order. Each child also gets
``PR_SET_PDEATHSIG``, so even a SIGKILLed demo leaves nothing running.

Everything a user can fix (a port in use, no server binary, an unreachable ``REDIS_URL``) is a
:class:`DemoError` with a one-line message that says what to do.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis

from autoscaler.config import TargetConfig
from autoscaler.daemon import Daemon
from autoscaler.demo.plan import Plan
from autoscaler.loop import TargetLoop
from autoscaler.targets.base import ScaleTarget
from autoscaler.targets.local import LocalProcessTarget, _die_with_parent, http_ready
from jobqueue.errors import describe, misconfigured, remedy
from jobqueue.redis_url import redact, url_problem
from jobqueue.server import ServerBinaryNotFoundError, ValkeyServer, free_port

log = logging.getLogger("autoscaler.demo")

API_READY_TIMEOUT = 60.0
"""Seconds for the API to import and answer /readyz (slow on a busy 2-core machine)."""


class DemoError(RuntimeError):
    """Something the user can fix; the message is one line saying what to do."""


def reserve_port(port: int, option: str) -> int:
    """``port`` if it is free (0: any free port); a taken one is a :class:`DemoError` naming ``option``."""
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DemoError(
                    f"port {port} is already in use: pass another {option}, or {option} 0 for any free port"
                ) from None
            raise DemoError(f"cannot use port {port} ({exc.strerror}): pass another {option}") from None
    return port


def check_redis(url: str) -> None:
    """PING ``url``; a malformed URL, an unreachable server or one refusing it is a :class:`DemoError`."""
    problem = url_problem(url)
    if problem is not None:
        raise DemoError(f"REDIS_URL {problem}: fix it, or unset REDIS_URL and the demo starts its own")
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        if misconfigured(exc):  # the server answers but refuses this URL: starting it is no fix
            raise DemoError(f"REDIS_URL={redact(url)}: Redis {describe(exc)}; {remedy(exc)}") from None
        raise DemoError(
            f"REDIS_URL={redact(url)} is unreachable ({exc}): start that server, or unset REDIS_URL "
            "and the demo starts its own"
        ) from None
    finally:
        client.close()


class Stack:
    """Starts and stops the demo's processes; a context manager that always cleans up."""

    def __init__(
        self,
        plan: Plan,
        run_dir: Path,
        *,
        redis_url: str | None = None,
        api_port: int = 0,
        metrics_port: int = 0,
    ) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self._external_redis = redis_url
        self._api_port = api_port
        self._metrics_port = metrics_port
        # The local target's own helper: the API and the server die with the demo like the workers.
        self._preexec = _die_with_parent()
        self.valkey: ValkeyServer | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.daemon: Daemon | None = None
        self._target: LocalProcessTarget | None = None
        self.redis_url = ""
        self.api_url = ""

    # ---- start ----------------------------------------------------------------------------------

    def start(self) -> Stack:
        self.redis_url = self._start_redis()
        self.api_url = self._start_api()
        self._start_daemon()
        return self

    def _start_redis(self) -> str:
        if self._external_redis:
            check_redis(self._external_redis)
            log.info("using REDIS_URL=%s", redact(self._external_redis))
            return self._external_redis
        try:
            self.valkey = ValkeyServer(self.run_dir / "valkey", own_session=True, preexec_fn=self._preexec)
        except ServerBinaryNotFoundError as exc:
            raise DemoError(str(exc)) from None
        try:
            self.valkey.start()
        except RuntimeError:
            last = self.valkey.tail_log(1).strip()
            raise DemoError(f"the Valkey server did not start ({last}); see {self.valkey.log_path}") from None
        log.info("valkey %s on %s", self.valkey.binary.name, self.valkey.url)
        return self.valkey.url

    def _start_api(self) -> str:
        port = reserve_port(self._api_port, "--api-port")
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            # On the API's own port: a second listener at the default 9464 made two demos collide.
            "METRICS_PORT": str(port),
            "MODEL_REF": self.plan.queue,
            "LOG_LEVEL": "WARNING",
        }
        log_path = self.run_dir / "api.log"
        with log_path.open("ab") as out:
            self.api = subprocess.Popen(
                [sys.executable, "-m", "api"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,  # noqa: PLW1509 - only calls an already-resolved prctl
            )
        deadline = time.monotonic() + API_READY_TIMEOUT
        while not http_ready(port):
            if self.api.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
                raise DemoError(f"the API did not start on port {port}: {tail or 'no output'}")
            time.sleep(0.1)
        log.info("api on http://127.0.0.1:%d", port)
        return f"http://127.0.0.1:{port}"

    def _make_target(self, config: TargetConfig) -> ScaleTarget:
        """The daemon's target factory: the same local target it would build, kept for the monitor."""
        self._target = LocalProcessTarget.from_config(config)
        return self._target

    def _start_daemon(self) -> None:
        port = reserve_port(self._metrics_port, "--metrics-port")
        config = self.plan.app_config(self.redis_url, port, self.run_dir / "workers")
        self.daemon = Daemon(config, target_factory=self._make_target, allow_local_targets=True).start()
        log.info("autoscaler metrics on http://127.0.0.1:%d/metrics", self.daemon.port)

    @property
    def loop(self) -> TargetLoop:
        """The daemon's control loop of the demo target."""
        if self.daemon is None:
            raise RuntimeError("the stack is not started")
        return self.daemon.loops[self.plan.target_name]

    @property
    def target(self) -> LocalProcessTarget:
        """The worker processes' target, as the daemon built it."""
        if self._target is None:
            raise RuntimeError("the stack is not started")
        return self._target

    @property
    def running(self) -> bool:
        """Whether anything was started and is not stopped yet."""
        return any(part is not None for part in (self.valkey, self.api, self.daemon))

    @property
    def metrics_port(self) -> int | None:
        return self.daemon.port if self.daemon else None

    # ---- stop -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything that was started, newest first; safe after a partial start."""
        if self.api is not None:
            _stop(self.api, timeout=10)
            self.api = None
        if self.daemon is not None:
            self.daemon.stop()  # drains the workers: each finishes its job, then exits
            self.daemon = None
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
