"""Request and response bodies of the JSON API (they are also the OpenAPI schema at /docs).

Requests forbid unknown fields: a misspelt ``priorty`` is a 422 naming the field, not a silently
normal-priority job.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from jobqueue import Job, JobStatus, Priority

ModelName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,99}$",
        description="Model name, e.g. `resnet` ([A-Za-z0-9._@/-], no colon: the version is separate)",
        examples=["reference"],
    ),
]
VersionName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Model version, e.g. `v2`: one listed in the model's traffic weights (weight 0 "
        "counts) or MODEL_REF's; omitted: chosen by the traffic weights",
        examples=["v1"],
    ),
]
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


MAX_DEPTH = 64
"""How deep a job's ``input`` (and its ``metadata``, whose own object counts as one level) may nest
arrays and objects. Pydantic reads up to ~254 levels but cannot write a job that deep back (its
serializer stops earlier): such a job was accepted and every read of it was a 500. Far beyond any
real input, far below both limits (a model's output may wrap the input a few levels deeper)."""


def storable(value: Any) -> Any:
    """Refuse what a JSON body can carry in but the job store cannot give back.

    Python's JSON parser takes ``NaN``, ``Infinity`` and overflowing numbers such as ``1e400``
    (read as infinity), and ``\\ud800`` escapes that leave a lone UTF-16 surrogate in a string.
    Strict JSON cannot write either back: such a job failed with a 500 on submission, or was
    accepted and then every read of it failed. Nor can a value nested deeper than :data:`MAX_DEPTH`
    be read back reliably. Refused here, they are a 422 naming the field. Run before the value is
    validated as JSON (whose validation recurses, and names every level of a too deep value in its
    error), in one walk.
    """
    stack = [(value, 0)]
    while stack:  # iterative: a deeply nested body must not hit the recursion limit
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (NaN, Infinity or one too large for a double)")
        if isinstance(item, str):
            _unicode(item)
        elif isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise ValueError(f"nests arrays and objects more than {MAX_DEPTH} levels deep (the limit)")
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str):
                    _unicode(key)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


def _unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = f"U+{ord(text[exc.start]):04X} at {exc.start}"
        raise ValueError(f"strings must be valid Unicode ({bad} is a lone surrogate)") from None


StorableJson = Annotated[JsonValue, BeforeValidator(storable)]
"""Any JSON value the job store can round-trip (see :func:`storable`)."""


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: StorableJson = Field(description="Any JSON value; handed to the model as is", examples=["a cat"])
    model: ModelName
    version: VersionName | None = None
    priority: Priority = Field(Priority.NORMAL, description="`high` jobs are served before `normal` ones")
    idempotency_key: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:@/+=-]{1,128}$",
        description="A repeated submission of the same request with the same key returns the first "
        "job instead of creating another: safe retries. Keys are per caller (API key, when keys are "
        "checked) and model version, kept for IDEMPOTENCY_TTL (a day) or until its job expires, if "
        "sooner. Reusing a key for a different request (model, version, input, priority or metadata) is "
        "refused: 422 `idempotency_key_reused`",
    )
    metadata: Annotated[dict[str, JsonValue], BeforeValidator(storable)] = Field(
        default_factory=dict, description="Stored with the job, returned as is"
    )


class JobAccepted(BaseModel):
    id: str
    url: str = Field(description="Where to fetch the job (also the Location header)")
    status: JobStatus
    queue: str = Field(description="`model:version` the job was routed to")
    created: bool = Field(
        description="True for the request that created the job; false when an idempotency key or the "
        "result cache matched a job an earlier request made"
    )


class Latency(BaseModel):
    queue_wait_ms: float | None = Field(description="Submitted to started (last attempt)")
    service_ms: float | None = Field(description="Started to finished (last attempt)")
    total_ms: float | None = Field(description="Submitted to finished")


class JobView(BaseModel):
    id: str
    status: JobStatus
    model: str
    version: str
    queue: str
    priority: Priority
    input: Any
    output: Any = None
    error: str | None = None
    attempts: int
    worker: str | None = None
    metadata: dict[str, Any]
    submitted_at: float = Field(description="Epoch seconds")
    started_at: float | None = None
    finished_at: float | None = None
    latency: Latency

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id, status=job.status, model=job.model, version=job.version, queue=job.queue,
            priority=job.priority, input=job.input, output=job.output, error=job.error,
            attempts=job.attempts, worker=job.worker, metadata=job.metadata,
            submitted_at=job.submitted_at, started_at=job.started_at, finished_at=job.finished_at,
            latency=latency_of(job),
        )  # fmt: skip


def latency_of(job: Job) -> Latency:
    def ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1000, 3)

    return Latency(
        queue_wait_ms=ms(job.submitted_at, job.started_at),
        service_ms=ms(job.started_at, job.finished_at),
        total_ms=ms(job.submitted_at, job.finished_at),
    )


class LegacyPushed(BaseModel):
    id: str


class LegacyStatus(BaseModel):
    id: str
    status: JobStatus
    attempts: int
    worker: str | None = None
    error: str | None = None


class LegacyData(BaseModel):
    id: str
    status: JobStatus
    output: Any = None
    error: str | None = None
    latency: Latency


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, description="Handed to the model as the job's input", examples=["hello"]
    )
    timeout: float | None = Field(
        None,
        ge=1,
        allow_inf_nan=False,
        description="Deadline of the whole request (submission and wait) in seconds, 1 or more, capped by "
        "the server's INFER_TIMEOUT: a longer one is not refused, the server's deadline applies",
    )


class InferResult(BaseModel):
    id: str
    modelRef: str = Field(description="`model:version` that served the request")  # noqa: N815 - wire name
    prompt: str
    routerPod: str = Field(description="HOSTNAME of the API process")  # noqa: N815
    kvEndpoints: list[str]  # noqa: N815
    processingMs: float = Field(description="Submission to result, as seen by the API")  # noqa: N815
    output: Any
    cached: bool = False


class Problem(BaseModel):
    """Every error response."""

    error: str = Field(description="Machine-readable code, e.g. `rate_limited`")
    detail: str = Field(description="What is wrong, for a human")


class ModelsView(BaseModel):
    default: str = Field(description="MODEL_REF: where /push and /infer submit")
    models: list[str]
    traffic: dict[str, dict[str, float]] = Field(
        description="Per model: version -> weight, as routing sees it now"
    )
