"""The job API for tests: in-process (Starlette's TestClient, lifespan included) or as a real
``python -m api`` uvicorn process, both against a real Valkey server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiConfig
from tests.support.valkey import free_port
from tests.support.workers import REPO, log_tail

FAST_API_ENV = {
    "MODEL_REF": "default:v1",  # the queue tests.support.workers' FAST_ENV workers serve
    "STATS_REFRESH_SECONDS": "0.05",
    "TRAFFIC_REFRESH_SECONDS": "0.05",
    "LOG_LEVEL": "WARNING",
}


@contextmanager
def api_client(redis_url: str, **env: str) -> Iterator[TestClient]:
    """The app in this process (lifespan run), configured as ``python -m api`` would be by ``env``.

    ``/metrics`` is a route of the app (``METRICS_PORT`` is ``PORT``) unless ``env`` says otherwise:
    no listener is started in this process, so the tests read the metrics through the client."""
    same_port = {"METRICS_PORT": env.get("PORT", str(ApiConfig().port))}
    config = ApiConfig.from_env({**FAST_API_ENV, "REDIS_URL": redis_url, **same_port, **env})
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        yield client


@dataclass
class ApiProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Its ``/metrics``: on ``METRICS_PORT``, a listener of its own unless it is ``PORT``."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        reply = httpx.get(self.metrics_url, timeout=5)
        reply.raise_for_status()
        return reply.text

    def http(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"api did not stop on SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL it unless it has exited already (a test may have stopped it on purpose)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def api_process(redis_url: str, log_dir: Path, **env: str) -> Iterator[ApiProcess]:
    """``python -m api`` on a free port; waits for /healthz (not /readyz: Redis may be down on
    purpose); SIGKILLs it at the end if the test did not stop it.

    A free port can be taken between the pick and the API's bind (another process on a shared
    machine, or a worker's probe server started by the same test): the API then exits, and some
    other server may answer on its port. So the health check must come from *this* API, and a
    lost port is retried on another one.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(PORT_ATTEMPTS):
        api = _start_api(redis_url, log_dir, free_port(), env)
        try:
            if _wait_healthy(api):
                break
        except BaseException:
            api.kill()
            raise
        api.kill()
    else:
        raise AssertionError(f"api could not bind a port in {PORT_ATTEMPTS} attempts:\n{api.log()}")
    try:
        yield api
    finally:
        api.kill()


PORT_ATTEMPTS = 3


def _start_api(redis_url: str, log_dir: Path, port: int, env: dict[str, str]) -> ApiProcess:
    """``METRICS_PORT`` a free port too, unless ``env`` names one (``"PORT"``: the API's own): two
    APIs on this machine (tests, a demo) must not both take the default."""
    log_path = log_dir / f"api-{port}.log"
    full = {
        **os.environ, **FAST_API_ENV, "REDIS_URL": redis_url, "PORT": str(port), "HOST": "127.0.0.1",
        "HOSTNAME": "api-test-pod", "PYTHONUNBUFFERED": "1", "METRICS_PORT": str(free_port()), **env,
    }  # fmt: skip
    if full["METRICS_PORT"] == "PORT":
        full["METRICS_PORT"] = str(port)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"], cwd=REPO, env=full, stdout=log, stderr=subprocess.STDOUT
        )
    return ApiProcess(proc, port, log_path, int(full["METRICS_PORT"]))


def _wait_healthy(api: ApiProcess, timeout: float = 20.0) -> bool:
    """True once this API answers /healthz; False if it lost its port; raises on any other failure."""
    deadline = time.monotonic() + timeout
    while True:
        if api.proc.poll() is not None:
            if "address already in use" in api.log().lower():
                return False
            raise AssertionError(f"api exited with {api.proc.returncode}:\n{api.log()}")
        try:
            reply = httpx.get(f"{api.url}/healthz", timeout=1)
            # The API's own answer: a worker probe says "ok\n", the autoscaler's adds its detail.
            if reply.status_code == 200 and _json(reply) == {"status": "ok"}:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"api not up after {timeout:g} s:\n{api.log()}")
        time.sleep(0.05)


def _json(reply: httpx.Response) -> object:
    try:
        return reply.json()
    except ValueError:
        return None
