"""Models for worker tests, loaded by workers through MODEL_CLASS=tests.support.models:<Name>."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from worker.model import PermanentJobError, ReferenceModel


class AlwaysFails(ReferenceModel):
    """Every prediction raises a (retryable) error: exercises retries and dead-lettering."""

    def predict(self, input: Any) -> dict[str, Any]:
        time.sleep(self.predict_seconds)
        raise RuntimeError(f"model exploded on {input!r} in pid {os.getpid()}")


class RejectsInput(ReferenceModel):
    """Inputs marked ``{"bad": true}`` are permanently rejected; others succeed."""

    def predict(self, input: Any) -> dict[str, Any]:
        if isinstance(input, dict) and input.get("bad"):
            raise PermanentJobError("input rejected")
        return super().predict(input)


class Hangs(ReferenceModel):
    """Every prediction blocks forever (a deadlocked model): only JOB_TIMEOUT gets the job back."""

    def predict(self, input: Any) -> dict[str, Any]:
        threading.Event().wait()
        raise AssertionError("unreachable")


class SetupRetriesOnAnyError(ReferenceModel):
    """A warm-up that retries on ``except Exception`` (a flaky weights download, in the wild)."""

    def setup(self) -> None:
        deadline = time.monotonic() + self.setup_seconds
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except Exception:  # the pattern under test
                continue


class NestsTooDeep(ReferenceModel):
    """Inputs marked ``{"deep": true}`` get an output nested deeper than the JSON encoder goes
    (a RecursionError when it is encoded); others succeed."""

    def predict(self, input: Any) -> Any:
        if isinstance(input, dict) and input.get("deep"):
            nested: list[Any] = []
            for _ in range(5000):
                nested = [nested]
            return {"tree": nested}
        return super().predict(input)
