"""Which Redis errors are a passing server state, not a bug: one definition for every party.

The API answers them 503 + ``Retry-After`` instead of 500, and a worker backs off and retries instead
of exiting. Both must agree on the list, or a state one of them treats as an outage (a script running
past its time limit, a replica promoted mid-request) crashes the other; so it lives here, beside the
protocol both speak.

redis-py turns some error replies into their own classes (``LOADING`` is a
:class:`~redis.exceptions.BusyLoadingError`, ``OOM`` an :class:`~redis.exceptions.OutOfMemoryError`,
...) and leaves others as a plain :class:`~redis.exceptions.ResponseError` whose message starts with
the code (``BUSY``, ``MISCONF``, ``NOREPLICAS``): both kinds are recognised, the latter by that code.

A server that refuses this process's credentials or ACL user, or lacks the database its URL names
(:func:`misconfigured`), is not such a state: the API answers it 503 without ``Retry-After`` and says
what to check, and a worker exits.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.exceptions as rx

UNAVAILABLE: tuple[type[rx.RedisError], ...] = (
    rx.ConnectionError,  # down or unreachable (MaxConnectionsError is a subclass; AuthenticationError
    # is one too, but is a misconfiguration: see MISCONFIGURED, which transient() checks first)
    rx.TimeoutError,
    rx.BusyLoadingError,  # LOADING (a ConnectionError subclass, listed for the reader)
    rx.ReadOnlyError,  # READONLY
    rx.ClusterDownError,  # CLUSTERDOWN, and MASTERDOWN (MasterDownError is a subclass)
    rx.OutOfMemoryError,  # OOM
    rx.TryAgainError,  # TRYAGAIN
)
"""Classes redis-py raises for a server that is down, (re)starting, failing over or full: the
request was not served and a later retry may be."""

MISCONFIGURED: tuple[type[rx.RedisError], ...] = (
    rx.AuthenticationError,  # WRONGPASS, NOAUTH, "invalid password": the credentials in REDIS_URL
    rx.AuthenticationWrongNumberOfArgsError,  # AUTH sent in a form the server does not take
    rx.NoPermissionError,  # NOPERM: the ACL user of REDIS_URL may not run a command the protocol needs
)
"""Errors that say this process is configured wrong for its server, not that the server is passing
through a state: a retry repeats them until an operator changes REDIS_URL or the server's
requirepass/ACL. Never :func:`transient`, although redis-py makes ``AuthenticationError`` a
``ConnectionError``: retried, a wrong password looked like an outage that never ended (the API
answering "retry later", the worker backing off forever)."""

WRONG_DATABASE: tuple[str, ...] = (
    "DB index is out of range",  # Redis and Valkey: beyond the server's `databases` (16 by default)
    "invalid DB index",  # older servers
    "SELECT is not allowed in cluster mode",  # a cluster has database 0 only
)
"""How a server refuses the SELECT redis-py sends on every new connection when REDIS_URL names a
database (its path, ``/1``) other than 0 that the server does not have. A plain ``ResponseError``
(redis-py strips the ``ERR`` code), recognised by its message; every connection repeats it until
REDIS_URL changes, so it is a misconfiguration like a wrong password. It was neither: the worker
crashed with a traceback after its warm-up (a restart loop, each restart a warm-up again), and the
API answered every request with a generic 500."""

REFUSALS: Mapping[str, str] = {
    "BUSY": (
        "is busy running a script or function past its time limit (BUSY: busy-reply-threshold) and "
        "answers nothing else until it ends or is killed"
    ),
    "MISCONF": "refuses writes because its persistence failed (MISCONF: it cannot save to disk)",
    "NOREPLICAS": "refuses writes while too few replicas are connected (NOREPLICAS: min-replicas-to-write)",
}
"""Error codes redis-py has no class for (a plain ``ResponseError`` starting with the code), each
a refusal that ends by itself (the script ends, a save succeeds, the replicas reconnect), with
what it means."""

_STATES: tuple[tuple[type[rx.RedisError], str], ...] = (
    (rx.BusyLoadingError, "is loading its data into memory after a restart (LOADING)"),
    (rx.AuthenticationError, "refused the credentials in REDIS_URL (AuthenticationError)"),
    (rx.AuthenticationWrongNumberOfArgsError, "refused the AUTH sent with REDIS_URL's credentials"),
    (rx.NoPermissionError, "refused a command to the ACL user in REDIS_URL (NOPERM: check its ACL rules)"),
    (rx.MaxConnectionsError, "has no free connection in this process's pool (MaxConnectionsError)"),
    (rx.TimeoutError, "did not answer in time (TimeoutError)"),
    (rx.ConnectionError, "is unreachable (ConnectionError)"),
    (rx.ReadOnlyError, "is a read-only replica (READONLY: failing over, or the URL names a replica)"),
    (rx.MasterDownError, "is a replica that lost its primary (MASTERDOWN)"),
    (rx.ClusterDownError, "reports its cluster down (CLUSTERDOWN)"),
    (rx.OutOfMemoryError, "is full: it reached maxmemory and refuses writes (OOM)"),
    (rx.TryAgainError, "asks to try again while keys move between nodes (TRYAGAIN)"),
)
"""What each class of :data:`UNAVAILABLE` means, most specific first."""


def error_code(exc: BaseException) -> str:
    """The code a plain ``ResponseError`` starts with (``"BUSY"``), else ''."""
    if type(exc) is not rx.ResponseError:
        return ""
    return str(exc).split(" ", 1)[0]


def transient(exc: BaseException) -> bool:
    """Whether a later retry of the same call may succeed: an outage, or a refusal that ends by itself.

    Every other Redis error (WRONGTYPE, a script's own error) is a bug, or a misconfiguration
    (:func:`misconfigured`: a wrong password, NOPERM) that a retry would only repeat.
    """
    if misconfigured(exc):
        return False
    return isinstance(exc, UNAVAILABLE) or error_code(exc) in REFUSALS


def misconfigured(exc: BaseException) -> bool:
    """Whether the server refused this process's configuration (:data:`MISCONFIGURED`, or a database
    it lacks: :data:`WRONG_DATABASE`): an operator has to fix REDIS_URL or the server's credentials;
    no retry will succeed before. :func:`remedy` says which."""
    return isinstance(exc, MISCONFIGURED) or wrong_database(exc)


def wrong_database(exc: BaseException) -> bool:
    """Whether the server refused the database REDIS_URL names (:data:`WRONG_DATABASE`)."""
    return type(exc) is rx.ResponseError and str(exc).startswith(WRONG_DATABASE)


def remedy(exc: BaseException) -> str:
    """What an operator should check for a :func:`misconfigured` error, as a sentence's rest
    ("... ; check the database number ...")."""
    if wrong_database(exc):
        return (
            "check the database number in REDIS_URL (its path, /0 when there is none) against the "
            "server's `databases` setting"
        )
    return "check the password (and user) in REDIS_URL against the server's requirepass or ACL rules"


def describe(exc: BaseException) -> str:
    """What is wrong with the server, as the rest of a sentence starting "Redis ...": e.g. "is busy
    running a script or function past its time limit (BUSY: ...) ...". Any error is described; one
    that is not :func:`transient` by its class name."""
    if refusal := REFUSALS.get(error_code(exc)):
        return refusal
    if wrong_database(exc):
        return f"refused the database REDIS_URL names ({exc}: the server has no such database)"
    for cls, meaning in _STATES:
        if isinstance(exc, cls):
            if isinstance(exc, rx.ConnectionError | rx.TimeoutError) and str(exc):
                # The client's own words say which address and how it failed ("Connection refused").
                return f"{meaning[:-1]}: {str(exc)[:200]})"
            return meaning
    return f"failed ({type(exc).__name__})"
