"""What every party says about a Redis URL: the URL with its password hidden, and why it is unusable.

A ``REDIS_URL`` often carries a password (``redis://:secret@host``, ``redis://user:secret@host``).
Every message and log line that names the server goes through :func:`redact`, so an error printed
to a terminal or shipped to a log store never holds the secret.
"""

from __future__ import annotations

SCHEMES = ("redis://", "rediss://", "unix://")
"""The schemes redis-py's ``from_url`` accepts."""


def redact(url: str) -> str:
    """``url`` with the password in its credentials replaced by ``***`` (the user name is kept).

    Works on text, not a parsed URL: a URL that does not parse (a port that is no number) is
    exactly the one an error message names, and must not leak either.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme (a mistake the message is about): the credentials may still be there
        scheme, rest = "", url
    where, question, query = rest.partition("?")
    # The last @ before the query ends the credentials: a host has none, and a password typed
    # without percent-encoding may hold a / (which would end the authority if split there first).
    credentials, at, host = where.rpartition("@")
    if not at:
        return url
    user, colon, _password = credentials.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}{question}{query}"


def scheme_problem(url: str) -> str | None:
    """Why redis-py would refuse ``url`` for its scheme, or None if the scheme is one it takes."""
    if url.startswith(SCHEMES):
        return None
    return f"{redact(url)!r} must start with redis://, rediss:// (TLS) or unix://"
