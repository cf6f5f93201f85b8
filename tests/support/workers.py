"""Start and stop ``python -m worker`` subprocesses the way Kubernetes would (env, signals, probes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.valkey import free_port

REPO = Path(__file__).resolve().parents[2]

FAST_ENV = {
    "QUEUE": "default:v1",
    "MODEL_SETUP_SECONDS": "0.2",
    "MODEL_PREDICT_SECONDS": "0.05",
    "VISIBILITY_TIMEOUT": "2",
    "MAX_ATTEMPTS": "3",
    "HEARTBEAT_SECONDS": "0.5",
    "WORKER_TTL": "3",
    "POLL_SECONDS": "0.5",
}
"""Short timings so the integration suite finishes in well under a minute and a half."""


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a process's log, for failure messages ("(no log)" if none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class WorkerProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def get(self, path: str) -> tuple[int, str]:
        """HTTP GET on the worker's probe server: (status, body); (0, error) if unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError as err:
            return 0, str(err)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            status, body = self.get("/readyz")
            # This worker's own answer (a ready state), not another server's that took its port.
            if status == 200 and body.strip() in {"idle", "busy"}:
                return
            time.sleep(0.05)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} still running after {timeout} s:\n{self.log()}"
            ) from None

    def log(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


class WorkerPool:
    """Spawns workers against one Redis URL; ``kill_all`` (run by the fixture) SIGKILLs leftovers."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str | None = None, *, ready: bool = True, **env: str) -> WorkerProcess:
        """Start a worker (env keys as the worker reads them, e.g. ``MODEL_CLASS=...``)."""
        name = name or f"worker-{len(self.workers)}"
        port = free_port()
        full = {
            **os.environ,
            **FAST_ENV,
            "REDIS_URL": self.redis_url,
            "HOSTNAME": name,
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker"], cwd=REPO, env=full, stdout=log, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(name, port, proc, log_path, full)
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
