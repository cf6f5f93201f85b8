"""Plays the selected arrivals against the real API over HTTP, and follows the jobs to completion.

Each arrival is one ``POST /v1/jobs`` sent at its trace time divided by the speedup (paced on the
event loop's monotonic clock; a slow answer never delays the next send). Completions are followed
through the queue's completions stream, as the autoscaler reads it, so the live view shows latency
while the run goes on; the final report reads the job records instead (see ``report``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
import redis.asyncio

from autoscaler.demo.plan import Plan, Traffic
from jobqueue import JobStatus, split_queue
from jobqueue import aio as jq

MAX_OUTSTANDING_REQUESTS = 64
"""HTTP requests in flight at once; a burst beyond that waits for answers (and shows as lag)."""


@dataclass(slots=True)
class Ledger:
    """What the demo's client sent and saw finish. Times are wall epoch seconds."""

    sent: int = 0
    submitted: dict[str, float] = field(default_factory=dict)  # accepted job id -> when it was sent
    rejected: Counter[str] = field(default_factory=Counter)  # why a submission failed -> how many
    finished: dict[str, tuple[JobStatus, float]] = field(default_factory=dict)  # job -> (status, at)
    latencies: list[float] = field(default_factory=list)  # wall seconds, sent -> finished
    _orphans: dict[str, tuple[JobStatus, float]] = field(default_factory=dict)

    def finish(self, job_id: str, status: JobStatus, at: float) -> None:
        """A terminal completion; one read before the job's 202 was seen is matched once it is."""
        if job_id in self.finished:
            return
        if job_id not in self.submitted:
            self._orphans[job_id] = (status, at)
            return
        self.finished[job_id] = (status, at)
        self.latencies.append(at - self.submitted[job_id])

    def accept(self, job_id: str, sent_at: float) -> None:
        self.submitted[job_id] = sent_at
        if job_id in self._orphans:
            self.finish(job_id, *self._orphans.pop(job_id))

    @property
    def outstanding(self) -> int:
        return len(self.submitted) - len(self.finished)

    @property
    def succeeded(self) -> int:
        return sum(1 for status, _ in self.finished.values() if status is JobStatus.SUCCEEDED)

    def latency_summary(self, speedup: float, slo: float) -> tuple[float, float, float] | None:
        """(p50, p95, share within ``slo``) of finished jobs so far, in trace seconds."""
        if not self.latencies:
            return None
        latency = np.asarray(self.latencies) * speedup
        p50, p95 = (float(x) for x in np.percentile(latency, [50, 95]))
        return p50, p95, float(np.mean(latency <= slo))


async def _submit(
    http: httpx.AsyncClient, body: dict[str, object], ledger: Ledger, gate: asyncio.Semaphore
) -> None:
    sent_at = time.time()
    try:
        response = await http.post("/v1/jobs", json=body)
    except httpx.HTTPError as exc:
        ledger.rejected[type(exc).__name__] += 1
        return
    finally:
        gate.release()
    if response.status_code == 202:
        ledger.accept(str(response.json()["id"]), sent_at)
    else:
        ledger.rejected[f"HTTP {response.status_code}"] += 1


async def play(http: httpx.AsyncClient, plan: Plan, traffic: Traffic, ledger: Ledger) -> None:
    """Send every arrival of ``traffic`` at its compressed time; returns once all were answered."""
    model, version = split_queue(plan.queue)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(MAX_OUTSTANDING_REQUESTS)
    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    try:
        for index, at in enumerate(traffic.arrivals.tolist()):
            delay = start + plan.wall(at) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            ledger.sent += 1
            body: dict[str, object] = {
                "model": model,
                "version": version,
                "input": {"n": index, "trace_seconds": round(traffic.start + at, 3)},
            }
            tasks.append(asyncio.create_task(_submit(http, body, ledger, gate)))
        await asyncio.gather(*tasks)
    finally:  # cancelled (Ctrl-C): no request may outlive the HTTP client it uses
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def reraise_lost_cancel() -> None:
    """Raise CancelledError if the current task was cancelled and something swallowed it.

    Ctrl-C and SIGTERM reach the demo's session as a cancellation of its task (asyncio.run's SIGINT
    handler). On Python 3.11, asyncio.wait_for returns its result instead of raising when the
    cancellation lands just after the awaited operation finished, and redis-py wraps every send in
    wait_for (its default socket timeout is 5 s): the interrupt can vanish and the run go on to the
    end. The task still counts the request (``Task.cancelling()``), so a loop that calls this once
    a turn stops within a turn all the same.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def follow(client: redis.asyncio.Redis, queue: str, ledger: Ledger, cursor: str = "0-0") -> str:
    """Fold the completions after ``cursor`` (from the start: ``0-0``) into ``ledger``; returns the
    cursor to pass next time."""
    stats = await jq.read_queue_stats(client, queue, since=cursor)
    for completion in stats.completions:
        if completion.status.terminal:
            ledger.finish(completion.job_id, completion.status, completion.finished_at)
    return stats.completions_cursor
