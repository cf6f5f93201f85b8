"""The demo's checks of ``REDIS_URL`` before anything starts: one line that says what to fix."""

from __future__ import annotations

import pytest
import redis
import redis.exceptions as rx

from autoscaler.demo.stack import DemoError, check_redis


@pytest.mark.parametrize(
    "url", ["notaurl", "http://127.0.0.1:6379/0", "redis://127.0.0.1:99999/0", "redis://:pw@h:port/0"]
)
def test_a_malformed_redis_url_is_a_demo_error_naming_it(url: str) -> None:
    with pytest.raises(DemoError, match="REDIS_URL") as caught:
        check_redis(url)
    assert "pw" not in str(caught.value)


class Refusing:
    """A client whose server answers, but refuses with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def ping(self) -> None:
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (rx.ResponseError("DB index is out of range"), "database number"),
        (rx.AuthenticationError("invalid username-password pair"), "password"),
    ],
)
def test_a_server_refusing_the_url_is_not_called_unreachable(
    monkeypatch: pytest.MonkeyPatch, error: Exception, needle: str
) -> None:
    monkeypatch.setattr(redis.Redis, "from_url", lambda *a, **k: Refusing(error))
    with pytest.raises(DemoError) as caught:
        check_redis("redis://:secret@127.0.0.1:6379/99")
    message = str(caught.value)
    assert needle in message and "unreachable" not in message and "start that server" not in message
    assert "secret" not in message


def test_a_server_that_does_not_answer_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis.Redis, "from_url", lambda *a, **k: Refusing(redis.ConnectionError("refused")))
    with pytest.raises(DemoError, match=r"unreachable .*start that server"):
        check_redis("redis://127.0.0.1:6379/0")
