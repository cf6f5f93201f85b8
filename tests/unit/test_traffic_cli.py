"""``python -m api.traffic``: what the operator typed is checked before Redis is touched, and every
mistake is one line on stderr with exit 2, never a traceback (server trouble: the integration tests)."""

from __future__ import annotations

import pytest
import redis

from api import traffic


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis must not be reached: any attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command contacted Redis before checking its input")

    monkeypatch.setattr(redis.Redis, "from_url", refuse)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["set", "resnet", "v1=abc"], {}, "'v1=abc': the weight 'abc' is not a number"),
        (["set", "resnet", "v1"], {}, "'v1' is not version=weight"),
        (["set", "resnet", "v1=0"], {}, "must give at least one version a weight > 0"),
        (["set", "resnet", "v1=-5", "v2=1"], {}, "weight of resnet:v1 must be a finite number >= 0"),
        (["set", "resnet", "v1=inf"], {}, "weight of resnet:v1 must be a finite number >= 0"),
        (["show"], {"REDIS_URL": "cache:6379"}, "REDIS_URL 'cache:6379' must start with redis://"),
        (["show"], {"REDIS_URL": "http://:s3cret@cache"}, "REDIS_URL 'http://:***@cache' must start"),
        (
            ["show"],
            {"REDIS_URL": "redis://:s3cret@cache:port/0"},
            "REDIS_URL 'redis://:***@cache:port/0' is not a usable Redis URL: Port could not be cast",
        ),
        (["show"], {"REDIS_URL": "redis://cache:99999/0"}, "is not a usable Redis URL: Port out of range"),
        (["show"], {"REDIS_URL": "redis://cache?socket_timeout=x"}, "Invalid value for 'socket_timeout'"),
        (["show"], {"KEY_PREFIX": "a b"}, "KEY_PREFIX"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KEY_PREFIX", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert traffic.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "s3cret" not in err
