"""Schemathesis against the live API's OpenAPI schema: generated requests (valid and invalid) to every
operation of a real ``python -m api`` process with a real worker and Valkey never get a 5xx.

The schemathesis CLI is run against the live server (its pytest plugin does not support this
pytest). Examples per operation are bounded and the seed fixed, so the run takes seconds and a
failure reproduces.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api import api_process
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration


def test_no_server_errors_on_generated_requests(
    redis_url: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    worker_pool.spawn("fuzz-worker", MODEL_PREDICT_SECONDS="0.002")  # so /infer answers, not 504s
    with api_process(redis_url, tmp_path, INFER_TIMEOUT="10", MAX_BODY_BYTES="65536") as api:
        cli = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [
                str(cli), "run", f"{api.url}/openapi.json",
                "--checks", "not_a_server_error",
                "--max-examples", "20", "--seed", "1", "--workers", "1",
                "--request-timeout", "15", "--generation-database", "none",
                "--report-dir", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        output = run.stdout[-6000:] + run.stderr[-2000:]
        assert run.returncode == 0, f"{output}\n--- api log ---\n{api.log()}"
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and int(counts[1]) == int(counts[2]) >= 100, run.stdout[-2000:]
