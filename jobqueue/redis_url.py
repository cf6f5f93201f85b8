"""What every party says about a Redis URL: the URL with its password hidden, and why it is unusable.

A ``REDIS_URL`` often carries a password, in its user-info (``redis://:secret@host``,
``redis://user:secret@host``) or, as redis-py also documents, in its query string
(``redis://host:6379/0?password=secret``, ``unix:///run/valkey.sock?password=secret``). Every
message and log line that names the server goes through :func:`redact`, so an error printed to a
terminal or shipped to a log store never holds the secret.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote_plus, urlsplit

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


def _secret_option(name: str) -> bool:
    """Whether a query option of this name (as written, percent- or plus-encoded) holds a password:
    redis-py's ``password`` (parse_qs decodes the name as it decodes the value), and, more than
    needed rather than less, any name with "password" in it, in any case (``ssl_password`` is
    passed on to the TLS connection as it is; a ``Password`` redis-py refuses is still a secret
    that the refusal's message would show)."""
    return "password" in unquote_plus(name).lower()


def _query_secrets(url: str, start: int) -> list[tuple[int, int]]:
    """Where the values of password options are in the query that begins at the first ``?`` of
    ``url[start:]``: each ``&``-separated option to its end, a ``#`` included (a fragment redis-py
    drops, but typed there it is a piece of the secret)."""
    question = url.find("?", start)
    if question < 0:
        return []
    spans = []
    at = question + 1
    for option in url[at:].split("&"):
        name, equals, value = option.partition("=")
        if equals and value and _secret_option(name):
            begin = at + len(name) + 1
            spans.append((begin, begin + len(value)))
        at += len(option) + 1
    return spans


def redact(url: str) -> str:
    """``url`` with its passwords replaced by ``***``: the one in its credentials (the user name is
    kept) and any given as a query option (``?password=...``).

    On text, as :func:`_credentials`; an ``@`` can be read two ways (the end of the credentials, or
    a character of a query's password), so what either reading calls a password is hidden."""
    spans = _query_secrets(url, 0)
    parts = _credentials(url)
    if parts is not None:
        scheme, user, colon, password, host = parts
        if colon:
            begin = len(scheme) + len(user) + 1
            spans.append((begin, begin + len(password)))
        spans += _query_secrets(url, len(url) - len(host))
    shown: list[str] = []
    end = 0
    for begin, stop in sorted(spans):
        if begin > end or not shown:
            shown += [url[end:begin], "***"]
            end = stop
        else:  # overlapping or touching the span before: hidden with it
            end = max(end, stop)
    return "".join(shown) + url[end:]


def password_in(url: str) -> str | None:
    """The password ``url`` carries, or None when it carries none (or an empty one): the one in its
    credentials, else a ``password`` query option as redis-py reads it (``?password=secret``)."""
    parts = _credentials(url)
    if parts is not None and parts[3]:
        return parts[3]
    query = (url if parts is None else parts[4]).partition("#")[0].partition("?")[2]
    values = parse_qs(query).get("password")  # redis-py's reading: decoded, a blank one dropped
    return values[0] if values else None


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
