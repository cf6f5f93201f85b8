"""Which queue (``model:version``) a request goes to: the version it names, else a weighted draw.

Weights come from ``TRAFFIC_WEIGHTS`` at start and are overridden per model by the live split in
Redis (:mod:`jobqueue.traffic`), refreshed in the background, so a canary or a rollback is a
weight change that every replica follows within seconds. A model with no weights anywhere uses the
version pinned by ``MODEL_REF``. Models and versions the API does not know are refused rather than
queued where no worker will ever look (and rather than adding a queue per made-up name to the set
of queues the autoscaler and workers watch).

A version is known if it appears in the weights of its model, configured or live (weight 0
included: that is how a version is made addressable by name before it takes any weighted traffic,
e.g. ``python -m api.traffic set resnet v1=100 v2=0``), or is ``MODEL_REF``'s version of the default
model. Registered workers do not make a version known: the API keeps no refreshed view of the
worker registry, and reading it per request would add a round trip to every submission.
"""

from __future__ import annotations

import bisect
import contextlib
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
        self._versions = self._known_versions()
        self._queues = self._known_queues()

    def _prepare(self) -> dict[str, _Split]:
        return {model: _Split.of(w) for model, w in {**self.configured, **self.live}.items()}

    def _known_versions(self) -> dict[str, frozenset[str]]:
        """Per model, the versions a request may name: every version in its configured or live
        weights (a live split overrides the configured one for draws, but the configured versions
        are deployed all the same), plus MODEL_REF's for the default model."""
        known: dict[str, set[str]] = {}
        for weights in (self.configured, self.live):
            for model, split in weights.items():
                known.setdefault(model, set()).update(split)
        if self.default_version is not None:
            known.setdefault(self.default_model, set()).add(self.default_version)
        return {model: frozenset(versions) for model, versions in known.items()}

    def _known_queues(self) -> frozenset[str]:
        queues = set()
        for model, versions in self._versions.items():
            for version in versions:
                with contextlib.suppress(ValueError):  # a name no queue can have: nothing routes there
                    queues.add(queue_name(model, version))
        return frozenset(queues)

    def versions(self, model: str) -> list[str]:
        """The versions of ``model`` a request may name, sorted (empty for an unknown model)."""
        return sorted(self._versions.get(model, ()))

    def queues(self) -> frozenset[str]:
        """Every queue a request may be routed to now: each model's known versions."""
        return self._queues

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
            self._versions = self._known_versions()
            self._queues = self._known_queues()

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        self.set_live(await _read_traffic(client, settings=self.settings))

    def resolve(self, model: str, version: str | None, sticky: str | None = None) -> str:
        """The queue for a request, or a 422 :class:`ApiError` saying why there is none (unknown
        model, or a named version that is not known: see the module docstring).

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
        if version is not None:
            queue = self._queue(model, version)  # a malformed name says so before "unknown"
            if version not in self._versions.get(model, ()):
                known = self.versions(model)
                raise ApiError(
                    422, "unknown_version",
                    f"version {version!r} of model {model!r} is not served here; known versions: "
                    f"{', '.join(known) or '(none)'}; omit the version to follow the traffic weights",
                    reason="invalid", known_versions=known,
                )  # fmt: skip
            return queue
        split = self._splits.get(model)
        if split is not None:
            version = split.draw(_unit(sticky) if sticky is not None else self._rng.random())
        elif self.default_version is not None:
            version = self.default_version
        else:  # unreachable with a validated config, kept for live weights being removed
            raise ApiError(422, "version_required", f"model {model!r} has no default version: name one")
        return self._queue(model, version)

    @staticmethod
    def _queue(model: str, version: str) -> str:
        try:
            return queue_name(model, version)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc), reason="invalid") from None
