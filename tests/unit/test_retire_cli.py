"""``python -m api.traffic retire``: what the operator typed, and the API environment it runs in, are
checked before Redis is touched; each mistake is one line on stderr with exit 2 (what the server
holds: tests/integration/test_retire_version.py)."""

from __future__ import annotations

import pytest
import redis

from api import traffic
from tests.unit.test_traffic_cli import test_bad_input_is_one_error_line_and_exit_2 as one_error_line


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis must not be reached: any attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command contacted Redis before checking its input")

    monkeypatch.setattr(redis.Redis, "from_url", refuse)
    for name in ("KEY_PREFIX", "MODEL_REF", "QUEUE", "TRAFFIC_WEIGHTS", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


Case = tuple[list[str], dict[str, str], str]
CASES: list[Case] = [
    (["m", "v:1"], {}, "version 'v:1' holds ':': give the model and the version apart"),
    (["m", "bad version"], {}, "invalid queue name 'm:bad version'"),
    (["", "v1"], {}, "model must not be empty"),
    (["m", "v1", "--move-to", "v1"], {}, "--move-to 'v1' is the version being retired"),
    (["m", "v1", "--move-to", "x y"], {}, "invalid queue name 'm:x y'"),
    (["m", "v1", "--wait", "soon"], {}, "--wait 'soon' is not a number of seconds"),
    (["m", "v1", "--wait", "-1"], {}, "--wait must be between 0 and 86400 seconds"),
    (["m", "v1", "--settle", "nan"], {}, "--settle must be between 0 and 86400 seconds"),
    (
        ["m", "v1"],
        {"TRAFFIC_WEIGHTS": "m:v1"},
        "TRAFFIC_WEIGHTS='m:v1': entry 'm:v1' is not model:version",
    ),
    (["m", "v1"], {"MODEL_REF": "a b"}, "MODEL_REF='a b': invalid queue name"),
    (["m", "v1"], {"QUEUE": "a{b}"}, "QUEUE='a{b}': invalid queue name"),
    (["m", "v1"], {"REDIS_URL": "cache:6379"}, "REDIS_URL 'cache:6379' must start with redis://"),
    (["m", "v1"], {"KEY_PREFIX": "a b"}, "KEY_PREFIX"),
]
"""(arguments after ``retire``, environment, what the error line says)."""


@pytest.mark.parametrize("case", CASES, ids=[" ".join(argv) + str(env) for argv, env, _ in CASES])
def test_bad_input_is_one_error_line_and_exit_2(
    case: tuple[list[str], dict[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Checked as the other commands' input is (the same test, given these cases)."""
    argv, env, message = case
    one_error_line(["retire", *argv], env, message, monkeypatch, capsys)


def test_the_retire_command_documents_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        traffic.main(["retire", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--move-to VERSION",
        "--dead-letters {keep,delete}",
        "--dry-run",
        "--wait SECONDS",
        "--settle",
    ):
        assert option in out
