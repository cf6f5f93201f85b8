"""Translation between Redis hash/stream fields (strings) and the value types in ``jobqueue.types``.

Pure functions: unit-tested without a server. Optional values are stored as the empty string so a
record can always be written whole with one HSET (no HDEL bookkeeping).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from jobqueue.keys import split_queue
from jobqueue.types import (
    Completion,
    DeadLetter,
    Entry,
    Job,
    JobStatus,
    MalformedJobError,
    Priority,
    WorkerInfo,
    WorkerState,
)

T = TypeVar("T")

_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
"""``json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)`` without building
an encoder per call."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def dumps(value: Any) -> str:
    """Compact JSON, as UTF-8 text rather than ASCII escapes; refuses NaN/Infinity, which other
    languages' JSON parsers reject, and strings holding a lone UTF-16 surrogate (``"\\udc80"``, what
    ``surrogateescape`` decoding leaves of a byte that is not UTF-8), which is not text: every reader
    that encodes it again failed, an API answering the job with a generic 500 on every read.

    Non-ASCII text is stored as itself: escaped (``\\u00e9``, 6 bytes for the 2 of UTF-8's é), a
    1 MiB body of é took 3 MiB of Redis, and a model echoing its input into its output 9 MiB a job.
    Records written with the escapes before read the same: JSON decodes both spellings alike.
    Nothing downstream counts on ASCII: redis-py sends str arguments as UTF-8, the scripts treat the
    fields as opaque strings, and every reader decodes them with ``json.loads``. :func:`digest` keeps
    the escapes, so the fingerprints and cache keys already stored still match."""
    text = _COMPACT.encode(value)
    if not text.isascii() and (bad := _SURROGATE.search(text)) is not None:
        raise ValueError(f"a string holds a lone UTF-16 surrogate ({bad.group()!r}), which is not text")
    return text


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value``'s canonical JSON: sorted keys, compact, so two equal values digest
    alike whatever their key order (the result cache and idempotency fingerprints compare these)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def fmt_time(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def opt_float(value: str | None) -> float | None:
    return float(value) if value else None


def opt_str(value: str | None) -> str | None:
    return value or None


def as_map(reply: Any) -> dict[str, Any]:
    """A map reply in either protocol: RESP3 gives a dict, RESP2 a flat [k1, v1, k2, v2, ...] list."""
    if isinstance(reply, dict):
        return reply
    if not reply:
        return {}
    return dict(zip(reply[::2], reply[1::2], strict=True))


def job_fields(job: Job) -> dict[str, str]:
    """The hash fields that represent ``job`` (``entry``, ``attempt_token`` and ``submit_token`` are
    managed by the scripts: the stream entry that delivers the job, the token of the attempt that
    started, and that of the request that submitted it)."""
    return {
        "id": job.id,
        "queue": job.queue,
        "model": job.model,
        "version": job.version,
        "status": job.status.value,
        "priority": job.priority.value,
        "input": dumps(job.input),
        "submitted_at": fmt_time(job.submitted_at),
        "attempts": str(job.attempts),
        "started_at": fmt_time(job.started_at),
        "finished_at": fmt_time(job.finished_at),
        "worker": job.worker or "",
        "output": "" if job.output is None else dumps(job.output),
        "error": job.error or "",
        "metadata": dumps(job.metadata),
    }


def _clip(raw: str, limit: int = 60) -> str:
    return raw if len(raw) <= limit else raw[:limit] + "..."


def _decode(fields: Mapping[str, str], name: str, parse: Callable[[str], T], default: str | None = None) -> T:
    """``parse(fields[name])`` (``default`` if absent), failing with the field named: the message
    ends up in a failed job's error, where whoever wrote the record has to find what to fix."""
    raw = fields.get(name, default)
    if raw is None:
        raise MalformedJobError(f"field {name!r} is missing", name)
    if not _is_utf8(raw):
        # Bytes that are not UTF-8 reach here as lone surrogates (the driver decodes with
        # surrogateescape): refused here, or they fail later, wherever the text is encoded again
        # (an HTTP response, a Redis write), far from the field they came from.
        shown = _clip(repr(raw.encode("utf-8", "surrogateescape"))[2:-1])
        raise MalformedJobError(f"field {name!r} is malformed ('{shown}'): not valid UTF-8", name)
    try:
        return parse(raw)
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise MalformedJobError(f"field {name!r} is malformed ({_clip(raw)!r}): {exc}", name) from exc


def _is_utf8(raw: str) -> bool:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _opt_json(raw: str) -> Any:
    return json.loads(raw) if raw else None


def job_from_fields(fields: Mapping[str, str]) -> Job:
    """Inverse of :func:`job_fields`; raises :class:`MalformedJobError` naming the field of a
    corrupt record (missing, or not parsed by its type)."""
    queue = _decode(fields, "queue", str)
    model, version = split_queue(queue)
    return Job(
        id=_decode(fields, "id", str),
        queue=queue,
        model=_decode(fields, "model", str, model),
        version=_decode(fields, "version", str, version),
        status=_decode(fields, "status", JobStatus),
        priority=_decode(fields, "priority", lambda v: Priority(v or Priority.NORMAL.value), ""),
        input=_decode(fields, "input", json.loads),
        submitted_at=_decode(fields, "submitted_at", float),
        attempts=_decode(fields, "attempts", lambda v: int(v or 0), ""),
        started_at=_decode(fields, "started_at", opt_float, ""),
        finished_at=_decode(fields, "finished_at", opt_float, ""),
        worker=_decode(fields, "worker", opt_str, ""),
        output=_decode(fields, "output", _opt_json, ""),
        error=_decode(fields, "error", opt_str, ""),
        metadata=_decode(fields, "metadata", lambda v: json.loads(v or "{}"), ""),
    )


def worker_fields(info: WorkerInfo) -> dict[str, str]:
    return {
        "name": info.name,
        "queue": info.queue,
        "state": info.state.value,
        "started_at": fmt_time(info.started_at),
        "heartbeat_at": fmt_time(info.heartbeat_at),
        "job": info.job or "",
        "ready_at": fmt_time(info.ready_at),
        "warmup_seconds": fmt_time(info.warmup_seconds),
        "pid": "" if info.pid is None else str(info.pid),
    }


def worker_from_fields(fields: Mapping[str, str]) -> WorkerInfo:
    pid = fields.get("pid")
    return WorkerInfo(
        name=fields["name"],
        queue=fields["queue"],
        state=WorkerState(fields["state"]),
        started_at=float(fields["started_at"]),
        heartbeat_at=float(fields["heartbeat_at"]),
        job=opt_str(fields.get("job")),
        ready_at=opt_float(fields.get("ready_at")),
        warmup_seconds=opt_float(fields.get("warmup_seconds")),
        pid=int(pid) if pid else None,
    )


def completion_from_entry(stream_id: str, fields: Mapping[str, str]) -> Completion:
    return Completion(
        stream_id=stream_id,
        job_id=fields["job"],
        finished_at=float(fields["finished_at"]),
        duration=opt_float(fields.get("duration")),
        status=JobStatus(fields["status"]),
        worker=fields.get("worker", ""),
        submitted_at=opt_float(fields.get("submitted_at")),
    )


def dead_letter_from_entry(stream_id: str, fields: Mapping[str, str]) -> DeadLetter:
    return DeadLetter(
        stream_id=stream_id,
        job_id=fields["job"],
        attempts=int(fields["attempts"]),
        error=fields.get("error", ""),
        dead_at=float(fields["dead_at"]),
    )


def stream_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """An XRANGE-shaped reply (list of [id, [field, value, ...]]) as (id, fields) pairs.

    Entries deleted while pending come back from XREADGROUP/XCLAIM with null fields; they are
    returned with an empty mapping so callers can still acknowledge them.
    """
    return [(entry_id, as_map(fields)) for entry_id, fields in reply or []]


def read_entries(queue: str, reply: Any) -> list[Entry]:
    """An XREADGROUP reply, RESP2 ([[stream, entries], ...]) or RESP3 ({stream: entries}), as Entries."""
    if not reply:
        return []
    per_stream = reply.items() if isinstance(reply, dict) else reply
    return [
        Entry(queue, stream, entry_id, fields.get("job", ""))
        for stream, entries in per_stream
        for entry_id, fields in stream_entries(entries)
    ]


def group_info(reply: Any, group: str) -> dict[str, Any] | None:
    """Our group's row from an XINFO GROUPS reply (None if the stream or the group is missing)."""
    if isinstance(reply, Exception) or not reply:
        return None
    for row in reply:
        info = as_map(row)
        if info.get("name") == group:
            return info
    return None
