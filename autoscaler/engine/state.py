"""A policy's learned state as plain JSON, so that what it learned outlives the process.

Why: on bursty traffic the startup-aware policy's most valuable knowledge is slow to learn and
quick to lose. Its standing pool is fitted to up to an hour of bursts; a daemon that restarts (a
rollout, a crash, a node drain) without it scales that pool away one scale-down window later and
meets the next burst with reactive capacity only, which comes up a warm-up too late. Replayed on
the Azure code trace, one such restart costs 3.6 to 8.1 points of SLO attainment
(``benchmarks/restart.py``). The daemon therefore saves this state and a new process restores it.

How: every stateful part of the engine lists its learned attributes in a ``STATE`` class
attribute (never its configuration: a restored policy keeps its own knobs, so a changed window
simply trims what it inherits at the next tick). :func:`dump` turns those attributes into JSON
values; :func:`load` checks and decodes all of them before it assigns any, so an object is either
restored whole or left as it was. Floats survive JSON exactly (``repr`` round-trips), so a policy
restored from a dump decides exactly as the one that made it would have.

JSON rather than pickle: the document lives in a Redis that other software may write to, and
unpickling it would hand that software code execution in the autoscaler.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

FORMAT = 1
"""Version of the document layout; a document of another version is refused, not guessed at."""


class StateError(ValueError):
    """A state document that cannot be restored; the message names the field and the reason."""


RowSpec = type | tuple[type, ...]
"""What a ``ROWS`` entry says of each row of a deque: one number of this type (``float`` takes
any number, ``int`` whole ones only), or a row with one column of each of these types."""


class HasState(Protocol):
    """An object whose learned attributes :func:`dump` and :func:`load` handle."""

    STATE: ClassVar[tuple[str, ...]]


@runtime_checkable
class StatefulPolicy(Protocol):
    """A policy whose learned state can be saved and restored (see :mod:`autoscaler.engine.state`)."""

    @property
    def name(self) -> str: ...

    def export_state(self) -> dict[str, Any]: ...

    def restore_state(self, document: Mapping[str, Any]) -> list[str]: ...


def dump(obj: HasState) -> dict[str, Any]:
    """The learned attributes of ``obj`` as JSON-ready values."""
    return {name: _encode(getattr(obj, name)) for name in type(obj).STATE}


def load(obj: HasState, data: Any, path: str, skipped: list[str] | None = None) -> None:
    """Restore ``obj``'s learned attributes from :func:`dump` output, all or nothing.

    ``path`` names ``obj`` in messages. A part the saving config had and this one has not (or the
    reverse, or one whose shape the config changed, such as a season's length) stays as this
    config made it, and its path is appended to ``skipped``; so does a field listed in the
    class's ``STATE_ADDED`` (learned attributes newer than the first documents of this
    :data:`FORMAT`) that the document lacks, because an older version saved it. Raises
    :class:`StateError` if any other field is missing, or one is malformed; ``obj`` is then
    unchanged.

    Malformed is judged as strictly as the next tick would use the value, because a document
    restored whole but unusable fails every tick after it, where a refused one starts the
    daemon cold: a field the fresh object holds a number in must be a number (a whole one where
    it holds an int), the rows of a deque listed in the class's ``ROWS`` must have its columns,
    and the object's ``check_state``, if it has one, must find nothing wrong.
    """
    if not isinstance(data, Mapping):
        raise StateError(f"{path}: expected an object, got {type(data).__name__}")
    decoded: dict[str, Any] = {}
    notes: list[str] = []
    added = getattr(type(obj), "STATE_ADDED", ())
    rows: Mapping[str, RowSpec] = getattr(type(obj), "ROWS", {})
    for name in type(obj).STATE:
        if name not in data and name in added:
            notes.append(f"{path}.{name}")
            continue
        if name not in data:
            raise StateError(f"{path}.{name}: missing")
        decoded[name] = _decode(data[name], getattr(obj, name), f"{path}.{name}", notes)
        if name in rows:
            _check_rows(decoded[name], rows[name], f"{path}.{name}")
    check = getattr(obj, "check_state", None)
    problem = check(decoded) if callable(check) else None
    if problem:
        raise StateError(f"{path}.{problem}")
    for name, value in decoded.items():
        setattr(obj, name, value)
    if skipped is not None:
        skipped.extend(notes)
    after = getattr(obj, "after_restore", None)
    if callable(after):
        after()


def _has_state(value: Any) -> bool:
    return isinstance(getattr(type(value), "STATE", None), tuple)


def _shape(value: Any) -> dict[str, Any]:
    """The config-derived attributes a saved object must share with the one it is loaded into."""
    return {name: getattr(value, name) for name in getattr(type(value), "SHAPE", ())}


def _encode(value: Any) -> Any:
    if isinstance(value, bool):  # a number to Python, refused by _number: keep dump and load symmetric
        raise TypeError("cannot save a bool as state: learned attributes are numbers")
    if value is None or isinstance(value, int | float):
        return value
    if _has_state(value):
        return {"object": dump(value), "shape": _shape(value)}
    if isinstance(value, deque):
        rows = list(value)
        tuples = bool(rows) and all(isinstance(row, tuple) for row in rows)
        return {"deque": [_encode(row) for row in rows], "tuples": tuples}
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    if isinstance(value, np.ndarray):
        return {"array": [float(x) for x in value.tolist()]}
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"cannot save a {type(value).__name__} as state")


def _saved_object(data: Any) -> bool:
    return isinstance(data, Mapping) and "object" in data


def _decode(data: Any, like: Any, path: str, skipped: list[str]) -> Any:
    """``data`` decoded into the kind of value ``like`` (the fresh object's current value) is."""
    if _has_state(like) or (like is None and _saved_object(data)):
        if like is None or data is None:  # the part is off in one of the two configs
            skipped.append(path)
            return like
        if not _saved_object(data):
            raise StateError(f"{path}: expected a saved object")
        if data.get("shape", {}) != _shape(like):
            skipped.append(path)
            return like
        restored = copy.deepcopy(like)  # restored aside: a later field may still fail
        load(restored, data["object"], path, skipped)
        return restored
    if isinstance(like, deque):
        if not isinstance(data, Mapping) or not isinstance(data.get("deque"), list):
            raise StateError(f"{path}: expected a saved deque")
        rows = [_plain(row, f"{path}[{i}]") for i, row in enumerate(data["deque"])]
        if data.get("tuples"):
            rows = [tuple(row) if isinstance(row, list) else row for row in rows]
        return deque(rows, maxlen=like.maxlen)
    if isinstance(data, Mapping) and "array" in data:
        return np.asarray([_number(v, path) for v in _list(data["array"], path)], dtype=float)
    if isinstance(like, int | float) and not isinstance(like, bool):  # judged by this object's value
        return _typed(data, int if isinstance(like, int) else float, path)
    return None if data is None else _number(data, path)  # learned scalars hold nothing else


def _typed(data: Any, kind: type, path: str) -> int | float:
    """A number of ``kind``: any finite number for ``float``, a whole one for ``int``."""
    number = _number(data, path)
    if kind is int and not isinstance(number, int):
        raise StateError(f"{path}: expected a whole number, got {data!r}")
    return number


def _check_rows(rows: Any, spec: RowSpec, path: str) -> None:
    """Every row of a decoded deque is one number of ``spec``, or has one column per type in it."""
    for i, row in enumerate(rows):
        where = f"{path}[{i}]"
        if isinstance(spec, type):
            _typed(row, spec, where)
            continue
        if not isinstance(row, tuple | list) or len(row) != len(spec):
            raise StateError(f"{where}: expected a row of {len(spec)} numbers, got {row!r}")
        for j, (value, kind) in enumerate(zip(row, spec, strict=True)):
            _typed(value, kind, f"{where}[{j}]")


def _plain(data: Any, path: str) -> Any:
    """A number, None, or a (nested) list of them: all a learned attribute holds."""
    if data is None:
        return None
    if isinstance(data, list):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(data)]
    return _number(data, path)


def _list(data: Any, path: str) -> list[Any]:
    if not isinstance(data, list):
        raise StateError(f"{path}: expected a list, got {type(data).__name__}")
    return data


def _number(data: Any, path: str) -> int | float:
    if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
        raise StateError(f"{path}: expected a finite number, got {data!r}")
    return data
