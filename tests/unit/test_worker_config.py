"""``python -m worker`` refuses a bad setting at start with exit status 2 and one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
