"""What every party says about a Redis URL: the URL with its password hidden, and why it is unusable.

A ``REDIS_URL`` often carries a password (``redis://:secret@host``, ``redis://user:secret@host``).
Every message and log line that names the server goes through :func:`redact`, so an error printed
to a terminal or shipped to a log store never holds the secret.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

SCHEMES = ("redis://", "rediss://", "unix://")
"""The schemes redis-py's ``from_url`` accepts."""


def _credentials(url: str) -> tuple[str, str, str, str, str] | None:
    """``url`` as (scheme with ``://``, user, ``:`` or '', password, host and the rest), or None
    when it has no credentials. On text, not a parsed URL: a URL that does not parse (a port that
    is no number) is exactly the one an error message names, and must not leak either."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme (a mistake the message is about): the credentials may still be there
        scheme, rest = "", url
    # The last @ ends the credentials: a host has none, and a password typed without
    # percent-encoding may hold a / or a ? (which would end the authority if split there first).
    # An @ in the query (a certificate path) then hides the host too: more than needed, never less.
    credentials, at, host = rest.rpartition("@")
    if not at:
        return None
    user, colon, password = credentials.partition(":")
    return scheme + sep, user, colon, password, host


def redact(url: str) -> str:
    """``url`` with the password in its credentials replaced by ``***`` (the user name is kept)."""
    parts = _credentials(url)
    if parts is None:
        return url
    scheme, user, colon, _password, host = parts
    return f"{scheme}{user}{':***' if colon else ''}@{host}"


def password_in(url: str) -> str | None:
    """The password ``url`` carries, or None when it carries none (or an empty one)."""
    parts = _credentials(url)
    return (parts[3] or None) if parts is not None else None


def scheme_problem(url: str) -> str | None:
    """Why redis-py would refuse ``url`` for its scheme, or None if the scheme is one it takes."""
    if url.startswith(SCHEMES):
        return None
    return f"{redact(url)!r} must start with redis://, rediss:// (TLS) or unix://"


def url_problem(url: str) -> str | None:
    """Why redis-py cannot use ``url``, or None if it can; the message shows the URL redacted.

    Beyond the scheme, redis-py itself judges the URL: a client for it is built as ``from_url``
    builds one, without connecting, which refuses a port that is no number or beyond 65535, an
    option with a bad value (``?socket_timeout=abc``) or one no connection takes (``?foo=1``).
    Port 0, which redis-py silently turns into 6379, is refused too. redis-py's words are about the
    redacted URL, never the real one: a password typed with a ``/`` ends the host part, and
    redis-py would then quote a piece of it as the port.
    """
    problem = scheme_problem(url)
    if problem is not None:
        return problem
    shown = redact(url)
    reason = _parse_problem(shown)
    if reason is None and shown != url and _parse_problem(url) is not None:
        reason = "its password does not parse: percent-encode a / ? or # in it (%2F, %3F, %23)"
    return None if reason is None else f"{shown!r} is not a usable Redis URL: {reason}"


def _parse_problem(url: str) -> str | None:
    """What redis-py says against ``url`` (a URL with an accepted scheme) before connecting."""
    try:
        redis.ConnectionPool.from_url(url).make_connection()  # builds the client, no I/O
        port = urlsplit(url).port
    except (ValueError, TypeError, redis.RedisError) as exc:
        return str(exc)
    return "port 0 is not a port (1-65535)" if port == 0 else None
