"""Synthetic arrival traces with the shapes that stress an autoscaler differently.

Each shape is a rate function; arrivals are a non-homogeneous Poisson process drawn by thinning
(homogeneous at the peak rate, each point kept with probability rate(t)/peak), so every shape
shares one seeded, vectorised sampler. The fields double as the ``generate KIND`` CLI options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from experiments.distributions import Distribution


def _opt(
    default: float,
    text: str,
    *,
    positive: bool = False,
    at_most: float = math.inf,
    peak: bool = False,
    starts: str = "",
) -> Any:
    """A shape field: its ``generate`` help, and the finite range ``>= 0`` (``> 0`` when ``positive``,
    ``<= at_most``) the CLI admits, so a value the rate function cannot use is refused by name.

    ``peak`` marks a field the peak rate depends on, named when the trace would be too large;
    ``starts`` says what begins at the field's second (a trace that ends first would never show it).
    """
    metadata = {"help": text, "positive": positive, "at_most": at_most, "peak": peak, "starts": starts}
    return field(default=default, metadata=metadata)


class Shape(Protocol):
    @property
    def duration(self) -> float: ...

    @property
    def peak(self) -> float: ...

    def rate_at(self, t: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Poisson:
    """Constant rate: the smooth, easy case."""

    rate: float = _opt(5.0, "jobs per second", positive=True, peak=True)
    duration: float = _opt(3600.0, "trace length in seconds", positive=True)

    @property
    def peak(self) -> float:
        return self.rate

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        return np.full_like(t, self.rate)


@dataclass(frozen=True, slots=True)
class Diurnal:
    """Sinusoidal rate starting at the trough: the load a seasonal forecast should learn."""

    mean_rate: float = _opt(5.0, "average jobs per second", positive=True, peak=True)
    amplitude: float = _opt(0.8, "swing as a fraction of the mean (0..1)", at_most=1.0, peak=True)
    period: float = _opt(86400.0, "seconds per cycle", positive=True)
    duration: float = _opt(2 * 86400.0, "trace length in seconds", positive=True)

    @property
    def peak(self) -> float:
        return self.mean_rate * (1 + self.amplitude)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        return self.mean_rate * (1 - self.amplitude * np.cos(2 * math.pi * t / self.period))


@dataclass(frozen=True, slots=True)
class Ramp:
    """Flat, then a linear climb, then flat at the top: tests forecasting a trend one startup ahead."""

    start_rate: float = _opt(0.5, "jobs per second before the ramp", peak=True)
    end_rate: float = _opt(15.0, "jobs per second after the ramp", peak=True)
    ramp_at: float = _opt(300.0, "second the ramp begins", starts="the ramp begins")
    ramp_seconds: float = _opt(600.0, "length of the ramp", positive=True)
    duration: float = _opt(1800.0, "trace length in seconds", positive=True)

    @property
    def peak(self) -> float:
        return max(self.start_rate, self.end_rate)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        progress = np.clip((t - self.ramp_at) / self.ramp_seconds, 0.0, 1.0)
        return self.start_rate + (self.end_rate - self.start_rate) * progress


@dataclass(frozen=True, slots=True)
class Step:
    """A flash crowd: the base rate jumps by a factor for a while, with no warning."""

    base_rate: float = _opt(1.0, "jobs per second outside the crowd", positive=True, peak=True)
    factor: float = _opt(10.0, "rate multiplier during the crowd", peak=True)
    step_at: float = _opt(600.0, "second the crowd arrives", starts="the crowd arrives")
    step_seconds: float = _opt(300.0, "how long it stays")
    duration: float = _opt(1800.0, "trace length in seconds", positive=True)

    @property
    def peak(self) -> float:
        return self.base_rate * max(self.factor, 1.0)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        inside = (t >= self.step_at) & (t < self.step_at + self.step_seconds)
        return np.where(inside, self.base_rate * self.factor, self.base_rate)


@dataclass(frozen=True, slots=True)
class OnOff:
    """Bursts separated by silence: the idle-then-burst pattern of the Azure code trace."""

    rate: float = _opt(10.0, "jobs per second during a burst", positive=True, peak=True)
    on_seconds: float = _opt(30.0, "burst length", positive=True)
    off_seconds: float = _opt(270.0, "silence between bursts")
    duration: float = _opt(3600.0, "trace length in seconds", positive=True)

    @property
    def peak(self) -> float:
        return self.rate

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        on = np.mod(t, self.on_seconds + self.off_seconds) < self.on_seconds
        return np.where(on, self.rate, 0.0)


AnyShape = Poisson | Diurnal | Ramp | Step | OnOff

SHAPES: dict[str, type[AnyShape]] = {
    "poisson": Poisson,
    "diurnal": Diurnal,
    "ramp": Ramp,
    "step": Step,
    "onoff": OnOff,
}


def generate(
    shape: Shape, seed: int = 0, service: Distribution | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted arrival times in ``[0, duration)`` (and per-job service times if asked)."""
    if shape.duration <= 0 or shape.peak <= 0:
        raise ValueError("a trace needs a positive duration and a positive peak rate")
    rng = np.random.default_rng(seed)
    count = rng.poisson(shape.peak * shape.duration)
    candidates = np.sort(rng.uniform(0.0, shape.duration, count))
    keep = rng.uniform(0.0, shape.peak, count) < shape.rate_at(candidates)
    arrivals = candidates[keep]
    if service is None:
        return arrivals, None
    return arrivals, service.draw(rng, len(arrivals))
