"""Which queue (``model:version``) a request goes to: the version it names, else a weighted draw.

Weights come from ``TRAFFIC_WEIGHTS`` at start and are overridden per model by the live split in
Redis (:mod:`jobqueue.traffic`), refreshed in the background, so a canary or a rollback is a
weight change that every replica follows within seconds. A model with no weights anywhere uses the
version pinned by ``MODEL_REF``. Models the API does not know are refused rather than queued where
no worker will ever look.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio

from api.errors import ApiError
from jobqueue import Settings, queue_name
from jobqueue.binding import bind_async
from jobqueue.traffic import Weights, read_traffic

_read_traffic = bind_async(read_traffic)


def _unit(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class _Split:
    """A split prepared for O(log n) draws: cumulative weights over the versions."""

    versions: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, weights: Weights) -> _Split:
        live = sorted((v, w) for v, w in weights.items() if w > 0)
        return cls(tuple(v for v, _ in live), tuple(itertools.accumulate(w for _, w in live)))

    def draw(self, u: float) -> str:
        """The version for a uniform draw ``u`` in [0, 1)."""
        i = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.versions[min(i, len(self.versions) - 1)]


class TrafficRouter:
    def __init__(
        self,
        configured: Mapping[str, Weights],
        default_model: str,
        default_version: str | None,
        settings: Settings,
        rng: random.Random | None = None,
    ) -> None:
        self.configured = dict(configured)
        self.default_model = default_model
        self.default_version = default_version
        self.settings = settings
        self.live: dict[str, Weights] = {}
        self._rng = rng or random.Random()
        self._splits = self._prepare()

    def _prepare(self) -> dict[str, _Split]:
        return {model: _Split.of(w) for model, w in {**self.configured, **self.live}.items()}

    def effective(self) -> dict[str, Weights]:
        """Every model's split as requests see it now (live overrides configured)."""
        return {**self.configured, **self.live}

    def known(self, model: str) -> bool:
        return model == self.default_model or model in self._splits

    def models(self) -> list[str]:
        return sorted({self.default_model, *self._splits})

    def set_live(self, live: Mapping[str, Weights]) -> None:
        if live != self.live:
            self.live = dict(live)
            self._splits = self._prepare()

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        self.set_live(await _read_traffic(client, settings=self.settings))

    def resolve(self, model: str, version: str | None, sticky: str | None = None) -> str:
        """The queue for a request, or a 422 :class:`ApiError` saying why there is none.

        With ``sticky`` (the idempotency key) the weighted draw is a hash of it instead of a random
        number: a retried submission lands on the same version, where its key is remembered, so
        the retry finds the first job instead of creating a second one on the other version.
        """
        if not self.known(model):
            raise ApiError(
                422,
                "unknown_model",
                f"model {model!r} is not served here; known models: {', '.join(self.models())}",
                reason="invalid",
            )
        if version is None:
            split = self._splits.get(model)
            if split is not None:
                version = split.draw(_unit(sticky) if sticky is not None else self._rng.random())
            elif self.default_version is not None:
                version = self.default_version
            else:  # unreachable with a validated config, kept for live weights being removed
                raise ApiError(422, "version_required", f"model {model!r} has no default version: name one")
        try:
            return queue_name(model, version)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc), reason="invalid") from None
