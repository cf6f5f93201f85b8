"""What every party prints about a Redis URL: never its password (jobqueue.redis_url), and why
redis-py cannot use one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.redis_url import password_in, redact, scheme_problem, url_problem


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/2", "rediss://app:***@cache:6380/2"),
        ("redis://app@cache/0", "redis://app@cache/0"),  # a user alone is no secret
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("unix://:s3cret@/run/valkey.sock?db=1", "unix://:***@/run/valkey.sock?db=1"),
        ("redis://:pa/ss@cache:6379/0", "redis://:***@cache:6379/0"),  # a / typed into a password
        ("redis://:pa?ss@cache:6379/0", "redis://:***@cache:6379/0"),  # and a ?
        ("redis://:p@ss@cache:x/0", "redis://:***@cache:x/0"),  # an @ in it, and a port redis-py refuses
        ("app:s3cret@cache:6379", "app:***@cache:6379"),  # no scheme: the mistake being reported
        ("rediss://cache?ssl_cert_reqs=none", "rediss://cache?ssl_cert_reqs=none"),
        # redis-py's documented query form, and the unix socket's
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        ("unix:///run/valkey.sock?password=s3cret&db=1", "unix:///run/valkey.sock?password=***&db=1"),
        ("redis://app@cache/0?db=2&password=s3cret", "redis://app@cache/0?db=2&password=***"),
        ("redis://:s3cret@cache/0?password=s3cret", "redis://:***@cache/0?password=***"),  # both
        ("redis://cache/0?pass%77ord=s3cret", "redis://cache/0?pass%77ord=***"),  # redis-py decodes the name
        ("redis://cache/0?password=s3#cret", "redis://cache/0?password=***"),  # a # typed into it
        ("rediss://cache?ssl_password=s3cret", "rediss://cache?ssl_password=***"),  # the TLS key's
        ("redis://cache/0?password=", "redis://cache/0?password="),  # nothing to hide
        # an @ in a query's password: read as the credentials' end too, and hidden either way
        ("redis://cache:6379/0?password=s3c@ret", "redis://cache:***"),
        ("redis://:abc?password=s3c@cache/0", "redis://:***"),
    ],
)
def test_redact_hides_the_password_and_keeps_what_locates_the_server(url: str, shown: str) -> None:
    assert redact(url) == shown


QUERY_SAFE = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&@")


@given(
    password=st.text(alphabet=QUERY_SAFE, min_size=4),
    scheme=st.sampled_from(["redis://cache:6379/0", "rediss://app@cache/2", "unix:///run/v.sock"]),
    before=st.sampled_from(["", "db=1&"]),
)
def test_no_password_in_the_query_survives_redaction(password: str, scheme: str, before: str) -> None:
    url = f"{scheme}?{before}password={password}&socket_timeout=2"
    assert redact(url) == f"{scheme}?{before}password=***&socket_timeout=2"


@given(
    head=st.text(alphabet=QUERY_SAFE, max_size=4),
    tail=st.text(alphabet=QUERY_SAFE, min_size=1, max_size=6),
    scheme=st.sampled_from(["redis://cache:6379/0", "rediss://app:s3cret@cache/2", "unix:///run/v.sock"]),
)
def test_a_query_password_with_an_at_sign_is_hidden_whole(head: str, tail: str, scheme: str) -> None:
    """An @ there also reads as the end of the credentials: hidden more than needed, never less."""
    prefix = f"{scheme}?password="
    url = f"{prefix}{head}@{tail}&socket_timeout=2"
    shown = redact(url)
    assert shown.endswith("***&socket_timeout=2"), shown
    kept = shown.removesuffix("***&socket_timeout=2")
    assert prefix.startswith(kept), shown  # nothing of the password before it
    assert "s3cret" not in shown


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://:s3cret@cache/0", "s3cret"),
        ("redis://cache:6379/0?password=s3cret", "s3cret"),
        ("unix:///run/valkey.sock?db=1&password=s3%2Fcret", "s3/cret"),  # as redis-py decodes it
        ("redis://:in-url@cache/0?password=in-query", "in-url"),  # the one redis-py uses
        ("redis://cache/0", None),
        ("redis://app@cache/0?password=", None),
        ("redis://cache/0#?password=s3cret", None),  # a fragment, which redis-py ignores
    ],
)
def test_password_in_finds_it_where_redis_py_does(url: str, password: str | None) -> None:
    assert password_in(url) == password


PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)


@given(
    password=st.text(alphabet=PRINTABLE, min_size=4),
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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://:s3cret@localhost:abc/0", "Port could not be cast to integer value as 'abc'"),
        ("redis://:s3cret@localhost:99999/0", "Port out of range"),
        ("redis://localhost:0/0", "port 0 is not a port (1-65535)"),  # redis-py would use 6379
        ("redis://localhost:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
        ("unix:///run/valkey.sock?db=one", "Invalid value for 'db'"),
        ("redis://localhost?no_such_option=1", "no_such_option"),
        ("rediss://localhost?ssl_cert_reqs=sometimes", "Invalid SSL Certificate Requirements Flag"),
        # a / typed into the password ends the host part: redis-py would quote "s3" as the port
        ("redis://:s3/cret@cache:6379/0", "its password does not parse: percent-encode a / ? or #"),
        ("redis://localhost:abc/0?password=s3cret", "Port could not be cast to integer value as 'abc'"),
        ("unix:///run/valkey.sock?password=s3cret&db=one", "Invalid value for 'db'"),
    ],
)
def test_url_problem_is_redis_pys_reason_about_the_redacted_url(url: str, reason: str) -> None:
    problem = url_problem(url)
    assert problem is not None and problem.startswith(f"{redact(url)!r} is not a usable Redis URL: ")
    assert reason in problem and "s3" not in problem and "cret" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://app:s3cret@cache:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/ca.crt",
        "redis://:p@ss@cache/0",  # an @ in a password parses (the last one ends the credentials)
        "redis://[::1]:6379/0?socket_timeout=2.5",
        "unix:///run/valkey.sock?db=1",
        "unix:///run/valkey.sock?password=s3cret",
    ],
)
def test_url_problem_accepts_what_redis_py_uses(url: str) -> None:
    assert url_problem(url) is None


def test_url_problem_starts_with_the_scheme() -> None:
    assert url_problem("http://:s3cret@cache:6379") == scheme_problem("http://:s3cret@cache:6379")
