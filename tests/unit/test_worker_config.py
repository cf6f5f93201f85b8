"""``python -m worker`` refuses a bad setting at start with exit status 2 and one line naming the variable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from worker import runner
from worker.config import WorkerConfig
from worker.model import ReferenceModel

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "70000"}, "PORT must be <= 65535, got 70000"),
        ({"WORKER_TTL": "0.5", "HEARTBEAT_SECONDS": "1"}, "need HEARTBEAT_SECONDS < WORKER_TTL"),
        ({"WORKER_TTL": "0"}, "need HEARTBEAT_SECONDS < WORKER_TTL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL is not a usable Redis URL"),
        ({"MODEL_CLASS": "no_such_package.mod:Model"}, "MODEL_CLASS='no_such_package.mod:Model': cannot"),
        ({"MODEL_CLASS": "worker.model:NoSuchModel"}, "has no attribute 'NoSuchModel'"),
        ({"MODEL_SETUP_SECONDS": "thirty"}, "MODEL_SETUP_SECONDS='thirty' is not a number"),
        ({"MODEL_PREDICT_SECONDS": "-1"}, "MODEL_PREDICT_SECONDS must be a finite number >= 0"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' is not a log level"),
        # Past any sense, these failed deep in the worker with a traceback.
        ({"VISIBILITY_TIMEOUT": "1e300"}, "VISIBILITY_TIMEOUT must be at most 604800 seconds (a week)"),
        ({"POLL_SECONDS": "1e12"}, "POLL_SECONDS must be at most 604800 seconds"),
        ({"JOB_TIMEOUT": "1e20"}, "JOB_TIMEOUT must be at most 604800 seconds"),
        ({"MODEL_SETUP_SECONDS": "1e300"}, "MODEL_SETUP_SECONDS must be at most 604800 seconds"),
        ({"RESULT_TTL": "10000000000"}, "RESULT_TTL must be <= 1000000000"),
    ],
)
def test_the_worker_stops_at_start_naming_the_bad_variable(env: dict[str, str], message: str) -> None:
    """Every one of these used to end in an error that did not say which setting was wrong (an
    ``OverflowError`` from bind, ``could not convert string to float``, ``No module named``, ...) or,
    for a negative model time, only once setup began; a too-short WORKER_TTL was accepted and made
    the worker vanish from the registry between heartbeats."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "WORKER_", "LOG_"))}
    full = {
        **base,
        "HOSTNAME": "cfg-test",
        "PORT": "0",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: a worker that starts just retries
        "MODEL_SETUP_SECONDS": "0",
        **env,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worker"], check=False, cwd=REPO, env=full, capture_output=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker started with {env} instead of refusing it")
    stderr = done.stderr.decode(errors="replace").strip()
    last = stderr.splitlines()[-1] if stderr else ""
    assert (done.returncode, "Traceback" in stderr) == (2, False), stderr[-2000:]
    assert last.startswith("worker: configuration error: ") and message in last, stderr[-2000:]


def test_a_port_already_taken_stops_the_worker_naming_port() -> None:
    """A PORT another listener holds (a sidecar in the pod, say) ended in an ``OSError: [Errno 98]
    Address already in use`` traceback and exit status 1, with nothing naming PORT."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "HOSTNAME": "cfg-test", "PORT": str(port), "REDIS_URL": "redis://127.0.0.1:1/0"}
        done = subprocess.run(
            [sys.executable, "-m", "worker"], check=False, cwd=REPO, env=env, capture_output=True, timeout=10
        )
    stderr = done.stderr.decode(errors="replace").strip()
    assert (done.returncode, "Traceback" in stderr) == (2, False), stderr[-2000:]
    assert stderr.count("\n") == 0 and f"PORT={port} cannot be listened on" in stderr, stderr


@pytest.mark.parametrize(
    "refusal", [PermissionError(13, "Permission denied"), OSError(98, "Address already in use")]
)
def test_a_port_that_cannot_be_listened_on_is_a_configuration_error(
    refusal: OSError, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A port below 1024 without the privilege to bind it is refused like a taken one."""

    def refuse(*_: object, **__: object) -> None:
        raise refusal

    monkeypatch.setattr(runner, "start_probe_server", refuse)
    worker = runner.Worker(WorkerConfig.from_env({"HOSTNAME": "t", "PORT": "80"}), ReferenceModel(0, 0))
    assert worker.run() == runner.EXIT_MISCONFIGURED
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"configuration error: PORT=80 cannot be listened on ({refusal.strerror})"
    )
