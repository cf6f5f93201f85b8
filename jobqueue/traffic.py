"""Traffic weights per model, kept in Redis so a canary, an A/B split or a rollback takes effect on
every API replica within a refresh interval, without a redeploy.

One hash, ``<prefix>:traffic``, maps a model name to its weights as JSON (``{"v1": 90, "v2": 10}``):
a model's split is replaced whole by one HSET (never half old, half new) and every split is read
with one HGETALL. A model absent from the hash falls back to the API's configured weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from jobqueue import codec
from jobqueue.driver import Op, call
from jobqueue.keys import Keyspace, queue_name
from jobqueue.ops import DEFAULT_SETTINGS
from jobqueue.types import Settings

Weights = dict[str, float]


def traffic_key(*, settings: Settings = DEFAULT_SETTINGS) -> str:
    return Keyspace(settings.prefix).traffic


def validate_weights(model: str, weights: Mapping[str, float]) -> Weights:
    """``weights`` as a plain dict if usable: valid ``model:version`` names, finite weights >= 0,
    at least one > 0 (a split that routes nowhere is refused, not silently kept)."""
    out: Weights = {}
    for version, weight in weights.items():
        queue_name(model, version)  # raises ValueError on a bad name
        value = float(weight)
        if not (0 <= value < float("inf")):
            raise ValueError(f"weight of {model}:{version} must be a finite number >= 0, got {weight!r}")
        out[version] = value
    if not any(w > 0 for w in out.values()):
        raise ValueError(f"traffic weights of {model} must give at least one version a weight > 0")
    return out


def set_traffic(
    model: str, weights: Mapping[str, float], *, settings: Settings = DEFAULT_SETTINGS
) -> Op[None]:
    """Replace ``model``'s split (e.g. ``{"v1": 100}`` to roll a canary back)."""
    clean = validate_weights(model, weights)
    yield [call("HSET", traffic_key(settings=settings), model, codec.dumps(clean))]


def clear_traffic(model: str, *, settings: Settings = DEFAULT_SETTINGS) -> Op[None]:
    """Forget ``model``'s live split: the API's configured weights apply again."""
    yield [call("HDEL", traffic_key(settings=settings), model)]


def parse_split(model: str, text: str | bytes) -> Weights | None:
    """``model``'s split as stored in the traffic hash, or None if it does not parse (a bad HSET by
    hand): such an entry counts as no live split."""
    try:
        return validate_weights(model, json.loads(text))
    except (ValueError, TypeError, AttributeError):
        return None


def read_traffic(*, settings: Settings = DEFAULT_SETTINGS) -> Op[dict[str, Weights]]:
    """Every live split. An entry that does not parse is skipped, not fatal: one bad HSET by hand
    must not take routing down for every other model."""
    (raw,) = yield [call("HGETALL", traffic_key(settings=settings))]
    splits = {model: parse_split(model, text) for model, text in codec.as_map(raw).items()}
    return {model: split for model, split in splits.items() if split is not None}
