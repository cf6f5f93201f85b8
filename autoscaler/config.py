"""The daemon's YAML configuration, validated with pydantic.

One file describes the whole process: the HTTP port for metrics and probes, logging, leader election
and the list of scaled targets. Every model forbids unknown keys, so a typo in a ConfigMap is an
error that names the field (``targets[0].max_replica: Extra inputs are not permitted``) instead of a
silently ignored setting that leaves a production workload scaled by defaults.

``redis_url`` (and ``password_env``) may reference environment variables as ``${NAME}`` or
``${NAME:-default}``. The file keeps the reference; it is expanded when connecting, so
``check-config`` never prints a password that lives in a Secret. Validation still checks that every
referenced variable is set, so a missing Secret is reported at load time, not at the first tick.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autoscaler.engine.baselines import StaticPolicy
from autoscaler.engine.registry import make_policy, parse_spec
from autoscaler.engine.target import WorkloadSpec, slo_problem
from autoscaler.targets.base import WRITE_TIMEOUT_SECONDS
from jobqueue.redis_url import password_in

log = logging.getLogger("autoscaler.config")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the bad field."""


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}`` with the environment's values.

    Raises ``ValueError`` naming the variable when it is unset and has no default: an empty Redis
    URL would otherwise surface much later as a confusing connection error.
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None:
            if default is None:
                raise ValueError(f"environment variable {name} is not set")
            return default
        return value

    return _ENV_REF.sub(substitute, text)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _dns_label(value: str) -> str:
    """A namespace: what the API server accepts, checked at load time, not refused on every call."""
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes namespace name: at most 63 characters of a-z, 0-9 and "
            "'-', starting and ending with a letter or digit"
        )
    return value


def _dns_subdomain(value: str) -> str:
    """An object name (Deployment, StatefulSet, Lease): refused here rather than as an HTTP 4xx later."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes object name: at most 253 characters of a-z, 0-9, '-' "
            "and '.', starting and ending with a letter or digit"
        )
    return value


_HOST_NAME_LABEL = re.compile(r"[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?")


def _listen_address(value: str) -> str:
    """An address or a name the HTTP server can be told to listen on. Only its form is checked:
    whether this machine has the address, or resolves the name, is known when it binds (``run``
    then stops naming ``host``)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value)
        return value
    name = value.removesuffix(".")
    if 0 < len(name) <= 253 and all(_HOST_NAME_LABEL.fullmatch(label) for label in name.split(".")):
        return value
    bracketed = value.startswith("[") and value.endswith("]")
    if bracketed:
        hint = f" (without the brackets: {value[1:-1]!r})"
    else:
        hint = " (the port is the `port` field)" if ":" in value else ""
    raise ValueError(
        f"{value!r} is neither an IP address nor a host name{hint}: 0.0.0.0 listens on every IPv4 "
        "address, '::' on every address"
    )


KubeNamespace = Annotated[str, AfterValidator(_dns_label)]
KubeName = Annotated[str, AfterValidator(_dns_subdomain)]


class _Strict(BaseModel):
    # YAML reads ``.inf`` and ``.nan`` as floats, and a lower bound alone lets ``.inf`` through: an
    # infinite startup_seconds makes every decision fail, an infinite socket timeout every read, an
    # infinite state TTL every save, each only at run time. No setting here means anything infinite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _RedisConnection(_Strict):
    redis_url: str = Field(
        "${REDIS_URL:-redis://localhost:6379/0}",
        description="redis:// or rediss:// URL; ${ENV} references are expanded when connecting.",
    )
    password_env: str | None = Field(
        None, description="Name of an environment variable holding the Redis password (KEDA passwordFromEnv)."
    )
    socket_timeout_seconds: float = Field(2.0, gt=0, description="Per-command timeout; a timeout holds.")

    @field_validator("redis_url")
    @classmethod
    def _url_expands(cls, value: str) -> str:
        url = expand_env(value)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix:// (got {url.split('://')[0]!r})")
        return value

    @field_validator("password_env")
    @classmethod
    def _password_set(cls, value: str | None) -> str | None:
        if value is not None and value not in os.environ:
            raise ValueError(f"environment variable {value} is not set")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> _RedisConnection:
        """redis-py lets a password in the URL win over the one given beside it, so with both the
        password_env secret was silently never used: refused here, naming both."""
        if self.password_env is not None and password_in(expand_env(self.redis_url)) is not None:
            raise ValueError(
                "redis_url has a password and password_env names another; the URL's would be used "
                "and password_env ignored: drop one of them"
            )
        return self

    def resolved_url(self) -> str:
        return expand_env(self.redis_url)

    def password(self) -> str | None:
        return os.environ[self.password_env] if self.password_env else None


class StreamSourceConfig(_RedisConnection):
    """The project's own job streams (``jobqueue``): exact arrivals, completions and worker states."""

    kind: Literal["stream"] = "stream"
    queue: str = Field(description="Queue name, model:version (e.g. resnet:v1).")
    prefix: str = Field("jq", description="Key prefix shared with the API and the workers.")
    worker_ttl_seconds: float | None = Field(
        None,
        gt=0,
        description="Count a worker only while its last heartbeat (by the Redis server's clock) is at "
        "most this old; unset: the workers' own WORKER_TTL, which also bounds it when this is longer. "
        "Keep it above the workers' HEARTBEAT_SECONDS, or live workers drop out between beats.",
    )
    warm_start_seconds: float = Field(
        3600.0, ge=0, description="Rebuild this much arrival history from completions on start (0: off)."
    )

    @field_validator("queue")
    @classmethod
    def _valid_queue(cls, value: str) -> str:
        from jobqueue.keys import validate_queue

        return validate_queue(value)

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        # The rule the API and the workers apply to KEY_PREFIX: a prefix they would refuse is one
        # whose keys no job is ever written under, and the source would watch an empty queue.
        from jobqueue.keys import validate_prefix

        return validate_prefix(value)


class ListSourceConfig(_RedisConnection):
    """A plain Redis list (Celery, RQ, Bull, KEDA's redis scaler): waiting = LLEN."""

    kind: Literal["list"] = "list"
    key: str = Field(min_length=1, description="The list's key (KEDA listName).")
    arrivals_key: str | None = Field(
        None, description="Optional INCR'd counter of pushes; without it arrivals are estimated."
    )


SourceConfig = Annotated[StreamSourceConfig | ListSourceConfig, Field(discriminator="kind")]


class KubernetesTargetConfig(_Strict):
    """A Deployment or StatefulSet scaled through its scale subresource."""

    kind: Literal["kubernetes"] = "kubernetes"
    namespace: KubeNamespace | None = Field(None, description="Default: the daemon's own namespace.")
    workload_kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    name: KubeName = Field(description="The Deployment's or StatefulSet's name.")
    kubeconfig: str | None = Field(
        None, description="Path to a kubeconfig; default in-cluster, then ~/.kube."
    )


ALLOW_LOCAL_TARGETS = "allow_local_targets"
"""The validation context key that lets a config have local targets (see :class:`LocalTargetConfig`)."""

LOCAL_TARGETS_REFUSED = (
    "local targets start their `command` as processes of the autoscaler itself (with its "
    "ServiceAccount token and secrets), a development and demo feature: refused unless the process "
    "that starts the daemon allows them (`python -m autoscaler run --allow-local-targets`, "
    "`check-config --allow-local-targets`); a config file or reload cannot allow them"
)


class LocalTargetConfig(_Strict):
    """Worker processes on this machine, for development and the demo.

    Whoever may edit the config (a ConfigMap, hot-reloaded) could otherwise run any command in the
    autoscaler's pod, so this kind is refused unless the code that validates the config allows it
    in the validation context (``{ALLOW_LOCAL_TARGETS: True}``): the command line's
    ``--allow-local-targets``, the demo and tests; never the file itself.
    """

    kind: Literal["local"] = Field("local", validate_default=True)
    command: list[str] = Field(
        default_factory=lambda: ["python", "-m", "worker"],
        min_length=1,
        description="Worker command; 'python' means this interpreter.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every worker.")
    termination_grace_seconds: float = Field(
        60.0, gt=0, description="SIGKILL a draining worker that has not exited after this long."
    )
    log_dir: str | None = Field(None, description="Write each worker's output to <log_dir>/<name>.log.")

    @field_validator("kind")
    @classmethod
    def _allowed(cls, value: str, info: ValidationInfo) -> str:
        if not local_targets_allowed(info.context):
            raise ValueError(LOCAL_TARGETS_REFUSED)
        return value


def local_targets_allowed(context: Any) -> bool:
    """Whether a validation context allows local targets (absent: it does not)."""
    return isinstance(context, dict) and context.get(ALLOW_LOCAL_TARGETS) is True


def refuse_local_targets(config: AppConfig, allowed: bool) -> None:
    """Raise :class:`ConfigError` naming the first local target of ``config`` unless ``allowed``
    (for a config validated elsewhere, with another context, before the daemon runs it)."""
    if allowed:
        return
    for index, target in enumerate(config.targets):
        if isinstance(target.target, LocalTargetConfig):
            raise ConfigError(f"targets[{index}].target.kind: {LOCAL_TARGETS_REFUSED}")


TargetKindConfig = Annotated[KubernetesTargetConfig | LocalTargetConfig, Field(discriminator="kind")]


class StateConfig(_Strict):
    """Keeping the policy's learned state in the source's Redis, so a restart does not forget it.

    The leader saves it every ``save_every_seconds`` and when it stops; a new process restores it
    before its first decision (see :mod:`autoscaler.engine.state` for what that buys).
    """

    persist: bool = Field(
        True, description="Save and restore the learned state (false: every start is cold)."
    )
    save_every_seconds: float = Field(30.0, gt=0, description="How often the leader saves it.")
    ttl_seconds: float = Field(
        86400.0, gt=0, description="Redis expiry of the saved state: a target gone this long is forgotten."
    )

    @model_validator(mode="after")
    def _outlives_saves(self) -> StateConfig:
        if self.ttl_seconds <= self.save_every_seconds:
            raise ValueError("ttl_seconds must be > save_every_seconds, or the state expires between saves")
        return self


def _finite(knob: object) -> bool:
    """False for an infinite or NaN knob, spelled as a YAML float (``.inf``) or a string (``inf``)."""
    if isinstance(knob, str):
        try:
            knob = float(knob)
        except ValueError:
            return True  # not a number at all: the policy's own check names what it expects
    return not isinstance(knob, float) or math.isfinite(knob)


class PolicyConfig(BaseModel):
    """Which policy sizes the target, and its knobs (the policy config's fields, inline).

    ``policy: startup-aware`` or ``policy: "keda:listLength=10"`` are accepted as shorthand for
    ``{name: ...}``. Knobs are checked by building the policy once, so a wrong knob name or value is
    reported at load time with the list of valid ones.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "startup-aware"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _buildable(self) -> PolicyConfig:
        for key, knob in self.knobs.items():
            # null unsets an optional knob, as ``none`` does in a spec (``season_seconds: null``)
            if knob is not None and not isinstance(knob, str | int | float | bool):
                raise ValueError(f"knob {key!r} must be a number, a boolean, a string or null")
        for key, knob in (*parse_spec(self.name)[2].items(), *self.knobs.items()):
            if not _finite(knob):  # the policies' own checks are bounds, which .inf can pass
                raise ValueError(f"knob {key!r} must be a finite number, got {knob!r}")
        make_policy(self.name, WorkloadSpec(), **self.knobs)
        return self


class TargetConfig(_Strict):
    """One scaled workload: where its queue signals come from and what gets scaled."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Label in metrics and logs.")
    source: SourceConfig
    target: TargetKindConfig
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(20, ge=1)
    slo_seconds: float = Field(10.0, gt=0, description="Latency bound from submission to completion.")
    startup_seconds: float = Field(30.0, ge=0, description="Warm-up default until measured.")
    service_seconds: float = Field(5.0, gt=0, description="Service-time default until measured.")
    slots_per_pod: int = Field(1, ge=1, description="Jobs one worker serves at once.")
    tick_seconds: float = Field(5.0, gt=0, le=300)
    watch_seconds: float = Field(
        1.0,
        ge=0,
        le=300,
        description=(
            "Between ticks, read the queue's counts this often and let the policy order pods for a "
            "surge at once instead of at the next tick. 0 turns it off; a value written must be "
            "below tick_seconds (left at its default, it is off under a tick of 1 s or less)."
        ),
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    policy_reset_after_errors: int = Field(
        3,
        ge=1,
        description=(
            "After this many ticks in a row on which the policy raised (error policy-error), replace "
            "it by a fresh one built from this config, cold: its learned state is presumed broken."
        ),
    )
    shadow: bool = Field(False, description="Compute and publish decisions without acting.")
    state: StateConfig = Field(default_factory=StateConfig)

    @field_validator("max_replicas")
    @classmethod
    def _above_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"must be >= min_replicas ({low})")
        return value

    @model_validator(mode="after")
    def _watch_below_tick(self) -> TargetConfig:
        # The watch looks between ticks, so one of a tick or more never looks. Written in the file
        # it is a mistake to name (the daemon turned it off without a word); left at its default
        # under a tick of a second or less, it is simply off, as `experiments replay` has it.
        written = "watch_seconds" in self.model_fields_set
        if written and self.watch_seconds > 0 and self.watch_seconds >= self.tick_seconds:
            raise ValueError(
                f"watch_seconds {self.watch_seconds:g} is not below tick_seconds {self.tick_seconds:g}: "
                "the watch looks between ticks, so it would never look; set it below tick_seconds, "
                "or 0 to turn it off"
            )
        return self

    @model_validator(mode="after")
    def _slo_above_service(self) -> TargetConfig:
        problem = slo_problem(self.slo_seconds, self.service_seconds)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _policy_fits_the_workload(self) -> TargetConfig:
        # The policy's own check builds it for a default workload; knobs that depend on this
        # target's (a season of at least 5 ticks of *its* tick) failed only when the daemon built it.
        policy = make_policy(self.policy.name, self.workload(), **self.policy.knobs)
        # The daemon bounds every decision by min/max_replicas: `static:60` under a ceiling of 20
        # would run 20 pods while its name (and the operator) said 60.
        if isinstance(policy, StaticPolicy) and not self.min_replicas <= policy.replicas <= self.max_replicas:
            raise ValueError(
                f"policy {policy.name} is outside min_replicas..max_replicas "
                f"({self.min_replicas}..{self.max_replicas}): the bounds would run another size"
            )
        return self

    def workload(self) -> WorkloadSpec:
        return WorkloadSpec(
            slo_seconds=self.slo_seconds,
            startup_seconds=self.startup_seconds,
            service_seconds=self.service_seconds,
            slots_per_pod=self.slots_per_pod,
            tick_seconds=self.tick_seconds,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            watch_seconds=self.watch_seconds,
        )

    def policy_spec(self) -> str:
        return self.policy.name


class LeaderElectionConfig(_Strict):
    """A coordination.k8s.io Lease so that of several replicas exactly one acts (client-go defaults)."""

    enabled: bool = False
    lease_name: KubeName = "startup-autoscaler"
    lease_namespace: KubeNamespace | None = Field(
        None, description="Default: the pod's namespace, else 'default'."
    )
    identity: str | None = Field(
        None,
        description="Holder identity prefix (default: the pod name); a random suffix per process "
        "keeps replicas that share this config apart.",
    )
    lease_duration_seconds: float = Field(15.0, gt=0)
    renew_deadline_seconds: float = Field(10.0, gt=0)
    retry_period_seconds: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionConfig:
        # The same invariants client-go enforces: renewals must fit in the lease, retries in renewals.
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError("renew_deadline_seconds must be < lease_duration_seconds")
        if self.retry_period_seconds >= self.renew_deadline_seconds:
            raise ValueError("retry_period_seconds must be < renew_deadline_seconds")
        margin = self.lease_duration_seconds - self.renew_deadline_seconds
        if self.enabled and margin <= WRITE_TIMEOUT_SECONDS:
            # A write started just before the renew deadline must land before another replica may
            # take the lease: the margin must hold one whole write attempt (see autoscaler.leader).
            raise ValueError(
                f"lease_duration_seconds - renew_deadline_seconds ({margin:g}s) must be longer than "
                f"the Kubernetes write timeout ({WRITE_TIMEOUT_SECONDS:g}s)"
            )
        return self


class AppConfig(_Strict):
    """The whole daemon."""

    port: int = Field(9090, ge=0, le=65535, description="/metrics, /healthz, /readyz (0: any free port).")
    host: str = Field(
        "0.0.0.0",
        description="Listen address: an IPv4 or IPv6 address (0.0.0.0: every IPv4 one; '::' every "
        "one) or a host name.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    config_poll_seconds: float = Field(5.0, gt=0, description="How often the file is checked for changes.")
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    targets: list[TargetConfig] = Field(min_length=1)

    @field_validator("host")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return _listen_address(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        names = [t.name for t in targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique; repeated: {', '.join(duplicates)}")
        return targets


_UNION_TAGS = {"stream", "list", "kubernetes", "local"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('targets', 0, 'source', 'list', 'key')`` -> ``targets[0].source.key``.

    Pydantic inserts the discriminator value of a tagged union into the location; operators never
    wrote that level, so it is dropped.
    """
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part in _UNION_TAGS and previous in {"source", "target"}):
            path += f".{part}" if path else part
        previous = part
    return path or "(top level)"


def describe_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the field path, for logs and the CLI."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{_field_path(tuple(error['loc']))}: {message}")
    return "; ".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    YAML forbids it, but PyYAML keeps the last value silently: ``max_replicas: 5`` followed, forty
    lines on in a hand-edited ConfigMap, by ``max_replicas: 50`` validated and ran with 50.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (again on line {line})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, origin: str = "<config>", *, allow_local_targets: bool = False) -> AppConfig:
    """Validate YAML text; ``ConfigError`` carries a one-line message naming the bad field(s).

    ``allow_local_targets`` comes from the process (a command-line flag, the demo, tests), never
    from the text: without it a ``target.kind: local`` entry is an error.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: safe on untrusted text
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'targets', got {type(data).__name__}")
    try:
        return AppConfig.model_validate(data, context={ALLOW_LOCAL_TARGETS: allow_local_targets})
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe_error(exc)}") from None


def load_config(path: str | Path, *, port: int | None = None, allow_local_targets: bool = False) -> AppConfig:
    """Read and validate a config file (symlinks followed, as ConfigMap mounts need).

    ``port`` (``run --port``) stands in for the file's ``port`` in every version of the file read,
    the daemon's reloads included (:class:`ConfigWatcher`'s ``load``): read without it, each reload
    found the port "changed" from the command line's and was rejected as needing a restart.
    ``allow_local_targets`` (``run --allow-local-targets``) likewise holds for every version read:
    it is the process's to give, so a reload can neither turn it on nor off.
    """
    if port is not None and not 0 <= port <= 65535:  # model_copy does not validate
        raise ConfigError(f"--port must be within 0..65535 (0: any free port), got {port}")
    config = parse_config(read_text(path), str(path), allow_local_targets=allow_local_targets)
    return config if port is None else config.model_copy(update={"port": port})


def read_text(path: str | Path) -> str:
    """A file's UTF-8 text; one that cannot be read, or is not UTF-8, is a :class:`ConfigError`."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None


def effective_yaml(config: AppConfig) -> str:
    """The config with every default filled in, as YAML (what ``check-config`` prints)."""
    data = config.model_dump(mode="json")
    for target in data["targets"]:  # the discriminator first: it says how to read the rest
        for part in ("source", "target"):
            target[part] = {"kind": target[part].pop("kind"), **target[part]}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    """The watcher's view: whether the newest file was accepted, and if not, why."""

    valid: bool
    path: str
    digest: str
    checked_at: float
    loaded_at: float
    error: str | None = None


class ConfigWatcher:
    """Applies a changed config file without a restart; a bad file is rejected and the old one kept.

    Kubernetes updates a mounted ConfigMap by swapping a ``..data`` symlink, so the file's own mtime
    and inode may not change: the watcher hashes the content behind the resolved path every
    ``interval`` seconds instead. ``apply`` may raise (e.g. a target cannot be built): that counts as
    a rejected file too, and the same content is not retried until it changes.
    """

    def __init__(
        self,
        path: str | Path,
        current: AppConfig,
        apply: Callable[[AppConfig], None],
        *,
        load: Callable[[Path], AppConfig] = load_config,
        on_status: Callable[[ConfigStatus], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._load = load  # as the running config was read (the command line's overrides)
        self._on_status = on_status
        self._clock = clock
        self.config = current
        now = clock()
        self.status = ConfigStatus(True, str(self.path), self._digest() or "", now, now)

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self) -> bool:
        """Look once; returns True when a new config was applied."""
        now = self._clock()
        digest = self._digest()
        if digest is None:
            # A ConfigMap swap can leave the path missing for an instant; a deleted file is no
            # reason to drop a working config either.
            log.warning(
                "config file unreadable, keeping the current config",
                extra={"fields": {"path": str(self.path)}},
            )
            return False
        if digest == self.status.digest:
            self.status = replace(self.status, checked_at=now)
            return False
        try:
            config = self._load(self.path)
            self._apply(config)
        except Exception as exc:
            error = str(exc) if isinstance(exc, ConfigError) else f"{self.path}: cannot apply: {exc}"
            log.error("config rejected, keeping the previous one", extra={"fields": {"error": error}})
            self._publish(replace(self.status, valid=False, digest=digest, checked_at=now, error=error))
            return False
        self.config = config
        log.info("config reloaded", extra={"fields": {"path": str(self.path), "digest": digest[:12]}})
        self._publish(ConfigStatus(True, str(self.path), digest, now, now))
        return True

    def _publish(self, status: ConfigStatus) -> None:
        self.status = status
        if self._on_status is not None:
            self._on_status(status)

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("config check failed")
