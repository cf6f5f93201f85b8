"""What every party prints about a Redis URL: never its password (jobqueue.redis_url)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.redis_url import redact, scheme_problem


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/2", "rediss://app:***@cache:6380/2"),
        ("redis://app@cache/0", "redis://app@cache/0"),  # a user alone is no secret
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("unix://:s3cret@/run/valkey.sock?db=1", "unix://:***@/run/valkey.sock?db=1"),
        ("redis://:pa/ss@cache:6379/0", "redis://:***@cache:6379/0"),  # a / typed into a password
        ("redis://:p@ss@cache:x/0", "redis://:***@cache:x/0"),  # an @ in it, and a port redis-py refuses
        ("app:s3cret@cache:6379", "app:***@cache:6379"),  # no scheme: the mistake being reported
        ("rediss://cache?ssl_cert_reqs=none", "rediss://cache?ssl_cert_reqs=none"),
    ],
)
def test_redact_hides_the_password_and_keeps_what_locates_the_server(url: str, shown: str) -> None:
    assert redact(url) == shown


PRINTABLE_BUT_QUERY = st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="?")


@given(
    password=st.text(alphabet=PRINTABLE_BUT_QUERY, min_size=4),
    user=st.sampled_from(["", "app"]),
    scheme=st.sampled_from(["redis://", "rediss://", ""]),
)
def test_no_password_survives_redaction(password: str, user: str, scheme: str) -> None:
    url = f"{scheme}{user}:{password}@cache.internal:6379/0"
    assert redact(url) == f"{scheme}{user}:***@cache.internal:6379/0"


def test_scheme_problem_names_what_redis_py_accepts_without_the_password() -> None:
    assert scheme_problem("redis://cache") is None and scheme_problem("unix:///run/v.sock") is None
    problem = scheme_problem("http://:s3cret@cache:6379")
    assert problem is not None and "s3cret" not in problem
    assert "redis://, rediss:// (TLS) or unix://" in problem
