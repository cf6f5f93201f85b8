"""Prometheus metrics of one worker, on a private registry (so tests can create several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from jobqueue import JobStatus, WorkerState
from jobqueue.consumer import Discarded

SERVICE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)


class WorkerMetrics:
    def __init__(self, queue: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["queue"]
        self.jobs = Counter(
            "worker_jobs",
            "Attempts finished by this worker, by the job's resulting status (queued = will retry; "
            "lost = discarded, reclaimed by another worker; missing = discarded, the job's record gone)",
            [*labels, "status"],
            registry=self.registry,
        )
        self.failures = Counter(
            "worker_job_failures", "Attempts whose model call raised", labels, registry=self.registry
        )
        self.skipped = Counter(
            "worker_entries_skipped",
            "Delivered entries not run (cancelled, already finished, dead-lettered, vanished)",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.malformed = Counter(
            "worker_malformed_jobs",
            "Started jobs whose record did not decode: failed without running the model",
            labels,
            registry=self.registry,
        )
        self.service = Histogram(
            "worker_service_seconds",
            "Model time per attempt",
            labels,
            buckets=SERVICE_BUCKETS,
            registry=self.registry,
        )
        self.state = Enum(
            "worker_state",
            "Lifecycle state",
            labels,
            states=[s.value for s in WorkerState],
            registry=self.registry,
        )
        self.warmup = Gauge(
            "worker_warmup_seconds",
            "Process start to ready (model setup included)",
            labels,
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "worker_redis_errors", "Redis calls that failed and were retried", labels, registry=self.registry
        )
        self.redis_up = Gauge(
            "worker_redis_up",
            "1 while the worker's heartbeats reach Redis, 0 while they fail (readiness ignores it)",
            labels,
            registry=self.registry,
        )
        self.queue = queue

    def finished(self, status: JobStatus | Discarded, seconds: float, raised: bool) -> None:
        self.jobs.labels(self.queue, status.value).inc()
        self.service.labels(self.queue).observe(seconds)
        if raised:
            self.failures.labels(self.queue).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
