"""Startup and service durations: a fixed value, or a lognormal described the way operators talk.

People know "startup takes 30 s on average and 45 s for the slow tenth", not a sigma; so the
lognormal is parameterised by its mean and 90th percentile and solved for mu and sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_Z90 = NormalDist().inv_cdf(0.9)
# For a lognormal, p90/mean = exp(z*sigma - sigma^2/2) peaks at sigma = z: no larger ratio exists.
MAX_P90_OVER_MEAN = math.exp(_Z90 * _Z90 / 2)


@dataclass(frozen=True, slots=True)
class Fixed:
    """Every draw is ``value``."""

    value: float

    def __post_init__(self) -> None:
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"duration must be a finite number >= 0, got {self.value}")

    @property
    def mean(self) -> float:
        return self.value

    @property
    def p90(self) -> float:
        return self.value

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.value, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A lognormal with the given mean and 90th percentile (``mean <= p90 <= 2.27 × mean``)."""

    mean: float
    p90: float

    def __post_init__(self) -> None:
        if not (self.mean > 0 and self.mean <= self.p90 <= self.mean * MAX_P90_OVER_MEAN):
            raise ValueError(
                f"a lognormal needs 0 < mean <= p90 <= {MAX_P90_OVER_MEAN:.2f} × mean, "
                f"got mean {self.mean} and p90 {self.p90}"
            )

    @property
    def sigma(self) -> float:
        # ln(p90/mean) = z*sigma - sigma^2/2; the smaller root is the plausible, light-tailed one.
        gap = math.log(self.p90 / self.mean)
        return _Z90 - math.sqrt(max(_Z90 * _Z90 - 2 * gap, 0.0))

    @property
    def mu(self) -> float:
        return math.log(self.mean) - self.sigma**2 / 2

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.lognormal(self.mu, self.sigma, size)


Distribution = Fixed | LogNormal


def duration(mean: float, p90: float | None = None) -> Distribution:
    """``Fixed(mean)`` unless a distinct ``p90`` asks for a spread."""
    if p90 is None or p90 == mean:
        return Fixed(mean)
    return LogNormal(mean, p90)
