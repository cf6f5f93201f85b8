"""Run ``python -m autoscaler demo`` as a subprocess and find every process it started.

Each run gets a unique marker in its environment. Every process the demo starts inherits it (the
Valkey server, the API, the workers), so after the demo exits, any process still carrying the marker
is a leftover, whoever its parent is now.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from experiments.traces import write_trace

REPO = Path(__file__).resolve().parents[2]
MARKER = "DEMO_TEST_RUN"


def poisson_trace(path: Path, rate: float, seconds: float, seed: int = 7) -> Path:
    """A generic trace CSV of Poisson arrivals."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, size=int(rate * seconds * 2)))
    write_trace(path, arrivals[arrivals < seconds])
    return path


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries ``MARKER=marker`` (zombies have none and do not count)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


class DemoProcess:
    """One demo run; stdout and stderr go to files so a test can wait for a line."""

    def __init__(self, tmp_path: Path, *args: str, redis_url: str | None = None, **env: str) -> None:
        self.marker = uuid.uuid4().hex
        self.out = tmp_path / "out"
        self.stdout_path = tmp_path / "stdout.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        full_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        full_env.update({MARKER: self.marker, "PYTHONUNBUFFERED": "1", **env})
        if redis_url is not None:
            full_env["REDIS_URL"] = redis_url
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autoscaler", "demo", "--out", str(self.out), *args],
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the demo's output:\n{self.stdout}\n{self.stderr}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"the demo still ran after {timeout} s:\n{self.stdout}\n{self.stderr}"
            ) from None

    def leftovers(self, settle: float = 5.0) -> list[int]:
        """Marked processes still alive, after giving just-signalled ones ``settle`` seconds."""
        deadline = time.monotonic() + settle
        while (alive := marked_pids(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return alive

    def kill_leftovers(self) -> None:
        for pid in marked_pids(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
