"""API settings, read once from the environment at start.

Every variable is parsed here and nowhere else; a bad value stops the process with one
:class:`ConfigError` that names the variable, what it holds and what was expected, so a typo in a
manifest is a clear crash-loop message rather than a 500 on the first request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from jobqueue import Settings, split_queue, validate_queue
from jobqueue.keys import prefix_from_env
from jobqueue.ratelimit import RateLimit
from jobqueue.redis_url import url_problem
from jobqueue.traffic import Weights, validate_weights

T = TypeVar("T")

ALL_MODELS = "*"

DEFAULT_METRICS_PORT = 9464
"""Where ``/metrics`` is served by default: a port of its own, so that the API's public port does
not show its per-queue submission counts to every client. 9464 is no other component's port here
(the worker's 8080, the autoscaler's 9090): they can run on one machine with their defaults."""

DEFAULT_AUTH_FAILURE_LIMIT = RateLimit(rate=10 / 60, burst=20)
"""``10/m,burst=20``: a person fixing a mistyped key gets twenty answers at once, a client that
keeps sending a wrong or missing key one 401 every six seconds, and 429s in between."""

DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")
"""uvicorn's own default (a proxy on the same host): no other peer can name a client by
``X-Forwarded-For``."""


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """``model_ref`` is the queue (``model:version``) or model (version by traffic weights) that
    ``/push`` and ``/infer`` submit to. ``api_keys`` maps a key to the models it may use (``*`` =
    all); empty means authentication is off. Zero disables ``max_waiting``, ``result_cache_ttl``;
    ``rate_limit`` None disables rate limiting, ``auth_failure_limit`` None the limit on failed
    authentications per client address (:mod:`api.authlimit`). ``metrics_port`` equal to ``port``
    serves ``/metrics`` on the API's own listener, as before ``METRICS_PORT`` existed; any other port
    is a separate listener on ``metrics_host`` (:mod:`api.metrics_server`). ``forwarded_allow_ips``
    are the proxies whose ``X-Forwarded-For`` names the client (uvicorn's setting, checked here)."""

    redis_url: str = "redis://localhost:6379/0"
    host: str = "0.0.0.0"
    port: int = 8000
    model_ref: str = "reference:v1"
    max_concurrency: int = 64
    infer_timeout: float = 30.0
    kv_endpoints: tuple[str, ...] = ()
    max_waiting: int = 10_000
    rate_limit: RateLimit | None = None
    max_body_bytes: int = 1 << 20
    api_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    traffic_weights: Mapping[str, Weights] = field(default_factory=dict)
    result_cache_ttl: int = 0
    stats_refresh_seconds: float = 0.5
    traffic_refresh_seconds: float = 2.0
    redis_timeout: float = 5.0
    hostname: str = field(default_factory=socket.gethostname)
    access_log: bool = False
    log_level: str = "INFO"
    settings: Settings = field(default_factory=Settings)
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_host: str = "0.0.0.0"
    auth_failure_limit: RateLimit | None = DEFAULT_AUTH_FAILURE_LIMIT
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS

    @property
    def default_model(self) -> str:
        return split_queue(self.model_ref)[0] if ":" in self.model_ref else self.model_ref

    @property
    def default_version(self) -> str | None:
        """The version pinned by MODEL_REF, if it names one."""
        return split_queue(self.model_ref)[1] if ":" in self.model_ref else None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def metrics_on_api_port(self) -> bool:
        """Whether ``/metrics`` is a route of the API itself (the old way) rather than a listener of
        its own."""
        return self.metrics_port == self.port

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, parse: Callable[[str], T], default: T, *, secret: bool = False) -> T:
            """``secret``: the message does not repeat the value (it is one, or holds some)."""
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}: {exc}" if secret else f"{name}={raw!r}: {exc}") from None

        model_ref = get("MODEL_REF", _model_ref, "") or get("QUEUE", _model_ref, d.model_ref)
        weights: dict[str, Weights] = get("TRAFFIC_WEIGHTS", parse_traffic_weights, {})
        if ":" not in model_ref and split_queue(model_ref)[0] not in weights:
            raise ConfigError(
                f"MODEL_REF={model_ref!r} names no version and TRAFFIC_WEIGHTS has none for it: "
                f"use MODEL_REF=model:version or add e.g. TRAFFIC_WEIGHTS={model_ref}:v1=100"
            )
        try:  # read as the workers read it (jobqueue.keys), so the two cannot disagree
            prefix = prefix_from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        host, port = get("HOST", str, d.host), get("PORT", _int_in(1, 65535), d.port)
        metrics_port = get("METRICS_PORT", _int_in(1, 65535), d.metrics_port)
        metrics_host = get("METRICS_HOST", str, host)
        if metrics_port == port and metrics_host != host:
            raise ConfigError(
                f"METRICS_HOST={metrics_host!r} has no effect: METRICS_PORT is PORT ({port}), so /metrics "
                "is served by the API's own listener on HOST; unset METRICS_HOST or give METRICS_PORT "
                "a port of its own"
            )
        return cls(
            redis_url=_redis_url(env, d.redis_url),
            host=host,
            port=port,
            model_ref=model_ref,
            max_concurrency=get("MAX_CONCURRENCY", _int_in(1, 1_000_000), d.max_concurrency),
            infer_timeout=get("INFER_TIMEOUT", _seconds(0.01), d.infer_timeout),
            kv_endpoints=get("KV_ENDPOINTS", _comma_list, d.kv_endpoints),
            max_waiting=get("MAX_WAITING", _int_in(0, 10**12), d.max_waiting),
            rate_limit=get("RATE_LIMIT", parse_rate_limit, None),
            max_body_bytes=get("MAX_BODY_BYTES", _int_in(64, 1 << 30), d.max_body_bytes),
            api_keys=get("API_KEYS", parse_api_keys, {}, secret=True),
            traffic_weights=weights,
            result_cache_ttl=get("RESULT_CACHE_TTL", _int_in(0, 10**9), d.result_cache_ttl),
            stats_refresh_seconds=get("STATS_REFRESH_SECONDS", _seconds(0.01), d.stats_refresh_seconds),
            traffic_refresh_seconds=get("TRAFFIC_REFRESH_SECONDS", _seconds(0.01), d.traffic_refresh_seconds),
            redis_timeout=get("REDIS_TIMEOUT", _seconds(0.05), d.redis_timeout),
            hostname=env.get("HOSTNAME") or d.hostname,
            access_log=get("ACCESS_LOG", _bool, d.access_log),
            log_level=get("LOG_LEVEL", _log_level, d.log_level),
            settings=Settings(
                prefix=prefix,
                result_ttl=get("RESULT_TTL", _int_in(1, 10**9), d.settings.result_ttl),
                idempotency_ttl=get("IDEMPOTENCY_TTL", _int_in(1, 10**9), d.settings.idempotency_ttl),
            ),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            auth_failure_limit=get("AUTH_FAILURE_LIMIT", _optional_rate_limit, d.auth_failure_limit),
            forwarded_allow_ips=get("FORWARDED_ALLOW_IPS", parse_forwarded_allow_ips, d.forwarded_allow_ips),
        )


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}]")
        return value

    return parse


def _seconds(low: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not (math.isfinite(value) and value >= low):
            raise ValueError(f"must be a number of seconds >= {low}")
        return value

    return parse


def _log_level(raw: str) -> str:
    """A level name ``logging`` knows; checked here because ``basicConfig`` fails with a traceback
    that says only "Unknown level", not which variable."""
    level = raw.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError("not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true/false (or 1/0, yes/no, on/off)")


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in raw.split(",") if x.strip())


def _redis_url(env: Mapping[str, str], default: str) -> str:
    """``REDIS_URL`` if redis-py can use it (:func:`jobqueue.redis_url.url_problem`): a URL it cannot
    parse would otherwise stop the process with a traceback. Not read through ``get``, which would
    print the value: the message shows it with its password hidden."""
    url = env.get("REDIS_URL", "").strip() or default
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"REDIS_URL {problem}")
    return url


def _model_ref(raw: str) -> str:
    return validate_queue(raw)


_RATE_RE = re.compile(
    r"""^\s* (\d+(?:\.\d+)?) \s*/\s* (\d*(?:\.\d+)?) \s* (s|sec|m|min|h|hour)
        \s* (?:,\s* burst \s*=\s* (\d+(?:\.\d+)?) )? \s*$""",
    re.VERBOSE,
)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}


def parse_rate_limit(raw: str) -> RateLimit:
    """``N/s``, ``N/m``, ``N/h`` or ``N/<k>s`` (N requests per window, bursts up to N), with an
    optional ``,burst=B``: ``"20/s"``, ``"600/m"``, ``"5/10s"``, ``"20/s,burst=100"``."""
    m = _RATE_RE.match(raw)
    if not m:
        raise ValueError("expected N/s, N/m, N/h or N/<k>s with optional ',burst=B', e.g. '20/s,burst=40'")
    count, per, unit, burst = m.groups()
    window = float(per or 1) * _UNIT[unit]
    if float(count) <= 0 or window <= 0:
        raise ValueError("the count and the window must be > 0")
    return RateLimit(rate=float(count) / window, burst=float(burst or count))


def _optional_rate_limit(raw: str) -> RateLimit | None:
    """:func:`parse_rate_limit`, or None for ``off`` (or ``0``, ``none``, ``false``)."""
    if raw.lower() in ("off", "0", "none", "false", "no"):
        return None
    return parse_rate_limit(raw)


def parse_forwarded_allow_ips(raw: str) -> tuple[str, ...]:
    """``FORWARDED_ALLOW_IPS``: comma-separated IP addresses and networks (``10.0.0.0/8``), or ``*``.

    uvicorn reads the same variable, but takes an entry that is no address nor network as a literal
    host name that no TCP peer ever matches: a typo (``10.0.0.0/33``, ``10.0.0.1/8``) silently trusted
    no proxy, and every client behind it shared the proxy's address. Checked here, and handed to
    uvicorn as given."""
    items = _comma_list(raw)
    if not items:
        raise ValueError("expected IP addresses or networks separated by commas, or '*'")
    if "*" in items:
        if len(items) > 1:
            raise ValueError("'*' (trust every peer) cannot be combined with addresses")
        return ("*",)
    for item in items:
        try:
            if "/" in item:
                ipaddress.ip_network(item)  # strict: "10.0.0.1/8" is a typo for 10.0.0.0/8 or /32
            else:
                ipaddress.ip_address(item)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network: {exc}") from None
    return items


def parse_api_keys(raw: str) -> dict[str, frozenset[str]]:
    """``key=model|model,key2=*``: each key and the models it may use (``*`` = every model)."""
    out: dict[str, frozenset[str]] = {}
    for n, item in enumerate(_comma_list(raw), 1):
        key, sep, models = item.partition("=")
        key = key.strip()
        names = frozenset(m.strip() for m in models.split("|") if m.strip())
        if not sep or not key or not names:  # shown by position: the entry may be a key
            raise ValueError(f"entry {n} ({item[:2]}…) is not key=model|model or key=*")
        if len(key) < 8:
            raise ValueError(f"API key {key[:2]}… is shorter than 8 characters")
        if not (key.isascii() and key.isprintable() and " " not in key):
            # X-API-Key reaches the app decoded as Latin-1, so a key with other characters (which
            # clients send as UTF-8) never matched: refused here rather than every request a 401.
            # Visible characters only (0x21-0x7E), as in any token; a space in a key is a typo.
            raise ValueError(
                f"API key {key[:2]}… must be printable ASCII without spaces (0x21-0x7E, ! to ~), what "
                "the X-API-Key header carries as typed: with other characters it could never match"
            )
        out[key] = names
    return out


def parse_traffic_weights(raw: str) -> dict[str, Weights]:
    """``model:version=weight,...``, e.g. ``resnet:v1=90,resnet:v2=10``, grouped by model."""
    grouped: dict[str, dict[str, float]] = {}
    for item in _comma_list(raw):
        queue, sep, weight = item.partition("=")
        model, version = split_queue(queue.strip())
        if not sep or not version:
            raise ValueError(f"entry {item!r} is not model:version=weight")
        try:
            grouped.setdefault(model, {})[version] = float(weight)
        except ValueError:
            raise ValueError(f"weight {weight!r} of {queue} is not a number") from None
    return {model: validate_weights(model, w) for model, w in grouped.items()}
