"""The model interface a worker serves, the reference model, and loading a model by import path.

A model is any class with a no-argument constructor, ``setup()`` (slow: load weights, warm up) and
``predict(input)`` (one job; returns something JSON-serialisable), like a Cog predictor. Raising
:class:`PermanentJobError` fails the job for good (bad input); any other exception is retried.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from typing import Any, Protocol

from worker.config import env_float


class PermanentJobError(Exception):
    """The input can never succeed (validation error): fail the job now, do not retry."""


class Model(Protocol):
    def setup(self) -> None: ...

    def predict(self, input: Any) -> Any: ...


def _seconds(name: str, default: float) -> float:
    """Checked when the model is built, at start, naming the variable: a bad value used to surface as
    ``could not convert string to float`` or, negative, only once setup began (the worker had already
    registered as starting) as ``sleep length must be non-negative``."""
    return env_float(os.environ, name, default)


class ReferenceModel:
    """Stands in for an ML model: a long warm-up, then a fixed time per prediction.

    Timings default to MODEL_SETUP_SECONDS (30) and MODEL_PREDICT_SECONDS (5) so a Deployment can
    tune them without code.
    """

    def __init__(self, setup_seconds: float | None = None, predict_seconds: float | None = None) -> None:
        self.setup_seconds = _seconds("MODEL_SETUP_SECONDS", 30.0) if setup_seconds is None else setup_seconds
        self.predict_seconds = (
            _seconds("MODEL_PREDICT_SECONDS", 5.0) if predict_seconds is None else predict_seconds
        )
        self.instance = ""

    def setup(self) -> None:
        time.sleep(self.setup_seconds)
        self.instance = str(uuid.uuid4())

    def predict(self, input: Any) -> dict[str, Any]:
        time.sleep(self.predict_seconds)
        return {
            "output": f"model inference on instance {self.instance} with input {input} was successful!",
            "input": input,
        }


def load_model(path: str) -> Model:
    """Instantiate ``package.module:ClassName``."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"MODEL_CLASS must look like 'package.module:ClassName', got {path!r}")
    # Named so an operator reading the crash knows which setting to fix (a bare "No module named"
    # does not say where the name came from); the original error stays chained.
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"MODEL_CLASS={path!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"MODEL_CLASS={path!r}: module {module_name!r} has no attribute {attr!r}")
    model: Model = cls()
    return model
