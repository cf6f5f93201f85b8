"""Build any policy from one short string, so the CLI, replays and tuning name policies alike.

Spellings: ``startup-aware``, ``startup-aware:confidence=0.99``, ``keda``, ``keda:listLength=10``,
``kpa:target=2``, ``static:40``. Option names are the config fields; camelCase spellings (as in
KEDA's and Knative's own docs) are accepted too. Keyword ``overrides`` win over the string, which is
how tuning sweeps a grid without formatting strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from autoscaler.engine.baselines import KedaConfig, KedaPolicy, KpaConfig, KpaPolicy, StaticPolicy
from autoscaler.engine.snapshot import Policy
from autoscaler.engine.target import WorkloadSpec

STARTUP_AWARE = "startup-aware"
POLICY_SPELLINGS = (
    STARTUP_AWARE,
    "startup-aware:knob=value,...",
    "keda",
    "keda:listLength=10",
    "kpa",
    "static:N",
)

Value = str | float | int | bool | None  # None unsets an optional knob


class PolicySpecError(ValueError):
    """A policy spec that names no policy, or options it does not have; the message says which."""


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def parse_spec(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """Split ``name:a=1,b=2`` into the name, positional arguments and options."""
    name, _, rest = spec.strip().partition(":")
    positional: list[str] = []
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if sep:
            name_ = _snake(key.strip())
            if name_ in options:  # ``listLength=5,list_length=10``: which one was meant?
                raise PolicySpecError(f"option {name_} is given twice in {spec.strip()!r}")
            options[name_] = value.strip()
        else:
            positional.append(part)
    return name.strip(), positional, options


def _startup_aware() -> tuple[type[Any], type[Any]]:
    """The lead's policy module, imported on first use so the baselines work without it."""
    try:
        module = importlib.import_module("autoscaler.engine.policy")
    except ModuleNotFoundError as exc:
        if exc.name != "autoscaler.engine.policy":
            raise
        raise PolicySpecError(f"policy {STARTUP_AWARE!r} is not available in this build") from None
    return module.StartupAwarePolicy, module.StartupAwareConfig


def _field_types(config_cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    if dataclasses.is_dataclass(config_cls):
        names = [f.name for f in dataclasses.fields(config_cls)]
    else:  # a pydantic model
        names = list(cast(Mapping[str, Any], config_cls.model_fields))
    return {name: hints[name] for name in names}


def _coerce(raw: Value, hint: Any, key: str) -> Value:
    """Turn an option string (or a grid value) into the field's type, with a readable error."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    text = str(raw).strip().lower()
    if type(None) in allowed and text in {"none", "null", ""}:
        return None
    try:
        if raw is None:
            raise ValueError
        if bool in allowed:
            if text not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError
            return text in {"true", "1", "yes"}
        if int in allowed:
            number = float(raw)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if float in allowed:
            number = float(raw)
            if math.isfinite(number):
                return number
            # No knob means anything at infinity (or NaN); an int knob never parses one.
            raise PolicySpecError(f"option {key}={raw!r} is not a finite number")
    except PolicySpecError:
        raise
    except ValueError:
        pass
    else:
        return raw
    kinds = "/".join(t.__name__ for t in allowed)
    raise PolicySpecError(f"option {key}={raw!r} is not a valid {kinds}")


def build_config(config_cls: type[Any], options: Mapping[str, Value], what: str) -> Any:
    """Instantiate a config class from options, naming the valid ones if a name is wrong."""
    fields = _field_types(config_cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        near = [m for key in unknown for m in difflib.get_close_matches(key, list(fields), n=1)]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise PolicySpecError(
            f"unknown option(s) {', '.join(unknown)} for policy {what!r}{hint}; valid, in snake_case "
            f"or camelCase: {', '.join(fields)}"
        )
    values = {key: _coerce(value, fields[key], key) for key, value in options.items()}
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise PolicySpecError(f"invalid option(s) for policy {what!r}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    """Condense a (possibly multi-line pydantic) validation error into one line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
    return " ".join(str(exc).split())


def _no_positional(name: str, positional: list[str]) -> None:
    if positional:
        raise PolicySpecError(f"policy {name!r} takes key=value options, not {','.join(positional)!r}")


def _make_static(positional: list[str], options: dict[str, Value]) -> Policy:
    extra = sorted(set(options) - {"n", "replicas"})
    raw = options.get("n", options.get("replicas", positional[0] if len(positional) == 1 else None))
    if extra or raw is None or len(positional) > 1:
        raise PolicySpecError("policy 'static' needs exactly a replica count, e.g. 'static:40'")
    count = _coerce(raw, int, "static")
    if not isinstance(count, int) or count < 1:
        raise PolicySpecError(f"policy 'static' needs a replica count >= 1, got {raw!r}")
    return StaticPolicy(count)


_BASELINES: dict[str, tuple[type[Any], Callable[[WorkloadSpec, Any], Policy]]] = {
    "keda": (KedaConfig, KedaPolicy),
    "kpa": (KpaConfig, KpaPolicy),
}


def _config_class(name: str) -> type[Any]:
    if name == STARTUP_AWARE:
        return _startup_aware()[1]
    if name in _BASELINES:
        return _BASELINES[name][0]
    raise PolicySpecError(f"unknown policy {name!r}; valid: {', '.join(POLICY_SPELLINGS)}")


def _configure(spec: str, overrides: Mapping[str, Value]) -> tuple[str, Any]:
    """The policy ``spec`` names and what configures it: its built config, or the static pool."""
    name, positional, parsed = parse_spec(spec)
    options: dict[str, Value] = {**parsed, **{_snake(k): v for k, v in overrides.items()}}
    if name == "static":
        return name, _make_static(positional, options)
    config_cls = _config_class(name)
    _no_positional(name, positional)
    return name, build_config(config_cls, options, name)


def make_policy(spec: str, workload: WorkloadSpec, **overrides: Value) -> Policy:
    """Parse ``spec`` and build the policy for ``workload``; ``ValueError`` says what is wrong."""
    name, config = _configure(spec, overrides)
    if name == "static":
        return cast(Policy, config)
    try:
        if name == STARTUP_AWARE:
            return cast(Policy, _startup_aware()[0](workload, config))
        return _BASELINES[name][1](workload, config)
    except PolicySpecError:
        raise
    except ValueError as exc:
        # Knobs each valid alone that this workload cannot take (a season shorter than five of its
        # ticks): the spec's error, so every caller that reports a bad spec reports this one too.
        raise PolicySpecError(f"{spec}: {exc}") from None


def format_option(value: Value) -> str:
    """An option value spelled as in a spec (``none``, ``0.9``, ``3600``); ``_coerce`` reads it back."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return value


def spec_options(spec: str) -> dict[str, Value]:
    """The options ``spec`` sets, typed as their fields (``keda:listLength=10`` -> ``{"list_length": 10}``).

    What a config file needs to build the same policy from ``{name: ..., **options}``; ``static:40``
    gives ``{"n": 40}``. Raises :class:`PolicySpecError` as :func:`make_policy` would.
    """
    name, config = _configure(spec, {})
    if isinstance(config, StaticPolicy):
        return {"n": config.replicas}
    fields = _field_types(_config_class(name))
    return {key: _coerce(value, fields[key], key) for key, value in parse_spec(spec)[2].items()}


def starting_point(spec: str, knobs: Iterable[str]) -> dict[str, Value]:
    """What ``spec`` sets each knob to: its own option, else the config's default."""
    _, config = _configure(spec, {})
    if isinstance(config, StaticPolicy):
        return {knob: config.replicas for knob in knobs if knob == "n"}
    return {knob: getattr(config, knob) for knob in knobs}


def tuning_grid(spec: str, extra: Mapping[str, Sequence[Value]] | None = None) -> dict[str, list[Value]]:
    """The knobs worth sweeping for a policy, and their candidate values.

    The config's own ``tuning_grid``, with ``extra`` replacing a knob's values or adding a knob
    (values are read like spec options, so ``"none"`` unsets an optional one). Every knob's value
    in ``spec`` (its default unless the spec sets it) is always a candidate, so the configuration
    a user starts from is one of the grid points and a tuning run shows where it stands.
    """
    name, _, _ = parse_spec(spec)
    if name == "static":
        fields: dict[str, Any] = {"n": int}
        grid: dict[str, list[Value]] = {"n": [10, 20, 40, 60, 80, 120]}
    else:
        config_cls = _config_class(name)
        fields = _field_types(config_cls)
        grid = {key: list(values) for key, values in config_cls.tuning_grid().items()}
    for raw_key, values in (extra or {}).items():
        key = _snake(raw_key)
        if key not in fields:
            raise PolicySpecError(
                f"unknown knob {raw_key!r} to tune for policy {name!r}; valid: {', '.join(fields)}"
            )
        if not values:
            raise PolicySpecError(f"no values to tune {key!r} over")
        grid[key] = [_coerce(value, fields[key], key) for value in values]
    for key, value in starting_point(spec, grid).items():
        if value not in grid[key]:
            grid[key].append(value)
    return {key: _sorted(values) for key, values in grid.items()}


def _sorted(values: list[Value]) -> list[Value]:
    """Distinct values, ``None`` first, then ascending (left in order if they do not compare)."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=lambda v: (v is not None, v if v is not None else 0))
    except TypeError:
        return distinct
