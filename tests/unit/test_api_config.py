"""API settings from the environment: defaults, parsing, and one clear error per bad variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from api.config import ApiConfig, ConfigError, parse_api_keys, parse_rate_limit, parse_traffic_weights
from jobqueue.ratelimit import RateLimit
from tests.support.workers import REPO


def test_defaults() -> None:
    c = ApiConfig.from_env({})
    assert (c.redis_url, c.port, c.model_ref, c.max_waiting) == (
        "redis://localhost:6379/0",
        8000,
        "reference:v1",
        10_000,
    )
    assert c.rate_limit is None and not c.auth_enabled and c.result_cache_ttl == 0
    assert (c.default_model, c.default_version) == ("reference", "v1")
    # /metrics on a port of its own, failed authentications limited, uvicorn's trusted proxies
    assert (c.metrics_port, c.metrics_host, c.metrics_on_api_port) == (9464, "0.0.0.0", False)
    assert c.auth_failure_limit == RateLimit(rate=10 / 60, burst=20)
    assert c.forwarded_allow_ips == ("127.0.0.1", "::1")


def test_metrics_port_auth_failure_limit_and_trusted_proxies() -> None:
    c = ApiConfig.from_env({
        "HOST": "::", "METRICS_PORT": "9100", "METRICS_HOST": "10.0.0.5",
        "AUTH_FAILURE_LIMIT": "5/s,burst=50", "FORWARDED_ALLOW_IPS": " 10.0.0.0/8, fd00::/8,192.0.2.7,",
    })  # fmt: skip
    assert (c.metrics_port, c.metrics_host, c.metrics_on_api_port) == (9100, "10.0.0.5", False)
    assert c.auth_failure_limit == RateLimit(rate=5, burst=50)
    assert c.forwarded_allow_ips == ("10.0.0.0/8", "fd00::/8", "192.0.2.7")
    assert ApiConfig.from_env({"HOST": "::1"}).metrics_host == "::1"  # HOST's, unless set
    same = ApiConfig.from_env({"PORT": "8080", "METRICS_PORT": "8080", "AUTH_FAILURE_LIMIT": "off"})
    assert same.metrics_on_api_port and same.auth_failure_limit is None
    assert ApiConfig.from_env({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)


def test_full_environment() -> None:
    c = ApiConfig.from_env({
        "REDIS_URL": "rediss://:pw@valkey:6380/1", "PORT": "9000", "MODEL_REF": "resnet",
        "TRAFFIC_WEIGHTS": "resnet:v1=90, resnet:v2=10,bert:v3=1", "MAX_CONCURRENCY": "4",
        "KV_ENDPOINTS": "redis://a:6379, redis://b:6379,", "MAX_WAITING": "0", "RATE_LIMIT": "600/m",
        "API_KEYS": "key-aaaaaaaa=resnet|bert,key-bbbbbbbb=*", "RESULT_CACHE_TTL": "300",
        "HOSTNAME": "api-0", "ACCESS_LOG": "yes", "KEY_PREFIX": "prod", "RESULT_TTL": "60",
    })  # fmt: skip
    assert (c.port, c.default_model, c.default_version, c.max_concurrency) == (9000, "resnet", None, 4)
    assert c.traffic_weights == {"resnet": {"v1": 90.0, "v2": 10.0}, "bert": {"v3": 1.0}}
    assert c.kv_endpoints == ("redis://a:6379", "redis://b:6379")
    assert c.rate_limit == RateLimit(rate=10.0, burst=600.0)
    assert c.api_keys == {"key-aaaaaaaa": frozenset({"resnet", "bert"}), "key-bbbbbbbb": frozenset({"*"})}
    assert (c.result_cache_ttl, c.hostname, c.access_log) == (300, "api-0", True)
    assert (c.settings.prefix, c.settings.result_ttl) == ("prod", 60)


def test_queue_is_accepted_as_model_ref_for_existing_manifests() -> None:
    assert ApiConfig.from_env({"QUEUE": "reference:v2"}).model_ref == "reference:v2"
    assert ApiConfig.from_env({"QUEUE": "a:v2", "MODEL_REF": "b:v3"}).model_ref == "b:v3"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT='eighty'"),
        ({"PORT": "70000"}, "PORT='70000': must be an integer in [1, 65535]"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL 'localhost:6379' must start with redis://"),
        ({"REDIS_URL": "redis://localhost:abc/0"}, "REDIS_URL 'redis://localhost:abc/0' is not a usable"),
        ({"REDIS_URL": "redis://localhost:99999/0"}, "Port out of range"),
        ({"REDIS_URL": "redis://localhost:6379/0?socket_timeout=abc"}, "Invalid value for 'socket_timeout'"),
        ({"MAX_WAITING": "-1"}, "MAX_WAITING='-1'"),
        ({"MAX_CONCURRENCY": "0"}, "MAX_CONCURRENCY='0'"),
        ({"INFER_TIMEOUT": "nan"}, "INFER_TIMEOUT='nan': must be a number of seconds"),
        ({"RATE_LIMIT": "fast"}, "RATE_LIMIT='fast': expected N/s"),
        # the bucket's expiry (its refill time) was beyond Redis's EXPIRE: every submission a 500
        ({"RATE_LIMIT": "1/9999999999999999999s"}, "RATE_LIMIT='1/9999999999999999999s': the bucket would"),
        ({"RATE_LIMIT": "1/h,burst=10000000000000"}, "take 3.6e+16 s to refill (burst / rate); at most"),
        ({"RATE_LIMIT": "1/25h"}, "RATE_LIMIT='1/25h': the bucket would take 90000 s to refill"),
        ({"RATE_LIMIT": "9" * 400 + "/s"}, "needs a finite rate > 0"),  # float() of it is inf
        ({"API_KEYS": "key-aaaaaaaa=*,abc"}, "API_KEYS: entry 2 (ab…) is not key=model|model"),
        ({"API_KEYS": "short=*"}, "API_KEYS: API key sh… is shorter than 8 characters"),
        ({"API_KEYS": "ключ-секрет-1=*"}, "API key кл… must be printable ASCII without spaces (0x21-0x7E"),
        ({"API_KEYS": "key-aaaaaaaa=*,café-secret=*"}, "API key ca… must be printable ASCII"),  # Latin-1
        ({"API_KEYS": "my secret key=*"}, "API key my… must be printable ASCII without spaces"),
        (
            {"TRAFFIC_WEIGHTS": "resnet=5"},
            "TRAFFIC_WEIGHTS='resnet=5': entry 'resnet=5' is not model:version",
        ),
        ({"TRAFFIC_WEIGHTS": "resnet:v1=x"}, "weight 'x' of resnet:v1 is not a number"),
        ({"TRAFFIC_WEIGHTS": "resnet:v1=0"}, "at least one version a weight > 0"),
        ({"MODEL_REF": "bad ref"}, "MODEL_REF='bad ref': invalid queue name"),
        ({"MODEL_REF": "resnet"}, "MODEL_REF='resnet' names no version and TRAFFIC_WEIGHTS has none"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG='maybe': must be true/false"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES='10'"),
        ({"KEY_PREFIX": "a b"}, "KEY_PREFIX='a b'"),
        ({"LOG_LEVEL": "FOO"}, "LOG_LEVEL='FOO': not a log level"),
        ({"METRICS_PORT": "0"}, "METRICS_PORT='0': must be an integer in [1, 65535]"),
        ({"METRICS_PORT": "metrics"}, "METRICS_PORT='metrics'"),
        (
            {"PORT": "9000", "METRICS_PORT": "9000", "METRICS_HOST": "127.0.0.1"},
            "METRICS_HOST='127.0.0.1' has no effect: METRICS_PORT is PORT (9000)",
        ),
        ({"AUTH_FAILURE_LIMIT": "fast"}, "AUTH_FAILURE_LIMIT='fast': expected N/s"),
        ({"AUTH_FAILURE_LIMIT": "1/25h"}, "AUTH_FAILURE_LIMIT='1/25h': the bucket would take 90000 s"),
        # uvicorn took each of these for a host name no peer matches: no proxy trusted, silently
        (
            {"FORWARDED_ALLOW_IPS": "10.0.0.1/8"},
            "FORWARDED_ALLOW_IPS='10.0.0.1/8': '10.0.0.1/8' is not an IP",
        ),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.0/33"}, "'10.0.0.0/33' is not an IP address or network"),
        ({"FORWARDED_ALLOW_IPS": "ingress.local"}, "'ingress.local' is not an IP address or network"),
        ({"FORWARDED_ALLOW_IPS": "*,10.0.0.1"}, "'*' (trust every peer) cannot be combined"),
        ({"FORWARDED_ALLOW_IPS": ","}, "FORWARDED_ALLOW_IPS=',': expected IP addresses or networks"),
    ],
)
def test_bad_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ApiConfig.from_env(env)
    assert message in str(exc.value)


def test_an_api_keys_error_does_not_print_the_keys() -> None:
    """The message repeated API_KEYS' whole value: every key, to stderr and the pod's log."""
    with pytest.raises(ConfigError) as exc:
        ApiConfig.from_env({"API_KEYS": "key-s3cret-one=*,key-s3cret-two"})
    assert str(exc.value) == "API_KEYS: entry 2 (ke…) is not key=model|model or key=*"


def test_python_m_api_exits_2_with_the_variable_named() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "api"], cwd=REPO, env={"PORT": "x", "PATH": ""}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "api: configuration error: PORT='x'" in run.stderr


def test_python_m_api_names_an_unusable_redis_url_without_its_password() -> None:
    """A URL redis-py cannot parse was a ValueError traceback and exit 1 when the app was built."""
    env = {"REDIS_URL": "redis://:s3cret@cache:99999/0", "PATH": ""}
    run = subprocess.run(
        [sys.executable, "-m", "api"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert (run.returncode, run.stderr.strip()) == (
        2, "api: configuration error: REDIS_URL 'redis://:***@cache:99999/0' is not a usable Redis URL: "
        "Port out of range 0-65535",
    )  # fmt: skip


def test_python_m_api_names_a_bad_log_level_instead_of_a_traceback() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "api"], cwd=REPO, env={"LOG_LEVEL": "FOO", "PATH": ""}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stderr.strip()) == (
        2, "api: configuration error: LOG_LEVEL='FOO': not a log level (DEBUG, INFO, WARNING, ERROR)"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "rate", "burst"),
    [
        ("20/s", 20, 20),
        ("600/m", 10, 600),
        ("5/10s", 0.5, 5),
        ("20/s,burst=100", 20, 100),
        ("3600/h", 1, 3600),
        ("1/24h", 1 / 86400, 1),  # the slowest bucket: a day to refill
        ("24/24h", 1 / 3600, 24),
    ],
)
def test_rate_limit_forms(raw: str, rate: float, burst: float) -> None:
    assert parse_rate_limit(raw) == RateLimit(rate=rate, burst=burst)


def test_parsers_edge_cases() -> None:
    assert parse_api_keys("") == {}
    visible = "".join(map(chr, range(0x21, 0x7F))).replace(",", "").replace("=", "")  # all but separators
    assert parse_api_keys(f"{visible}=*") == {visible: frozenset({"*"})}
    assert parse_traffic_weights("a:v1=1,a:v2=0") == {"a": {"v1": 1.0, "v2": 0.0}}
    with pytest.raises(ValueError, match="must be > 0"):
        parse_rate_limit("0/s")
