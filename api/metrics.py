"""Prometheus metrics of one API process, and the ASGI middleware that records every request.

A private registry per app (tests build several apps in one process). Requests are labelled by
route *template* (``/v1/jobs/{job_id}``), never by raw path, so ids cannot explode the series
count; unmatched paths share the label ``<unmatched>``. The middleware is plain ASGI rather than
Starlette's ``BaseHTTPMiddleware``, which costs a task and a queue per request on the hot path.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What :meth:`ApiMetrics.render` writes (Prometheus's text format 0.0.4), on either port."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REJECTION_REASONS = (
    "overloaded",  # waiting jobs above MAX_WAITING (circuit breaker)
    "rate_limited",  # the client's token bucket is empty
    "concurrency",  # MAX_CONCURRENCY sync requests already in flight
    "too_large",  # body above MAX_BODY_BYTES
    "invalid",  # malformed request (422)
    "unauthorized",  # no or unknown API key (401)
    "auth_rate_limited",  # no or unknown API key from an address over AUTH_FAILURE_LIMIT (429)
    "forbidden",  # key not allowed on the model (403)
    "redis_unavailable",  # 503 while Redis is down
    "timeout",  # sync /infer did not finish in time (504)
)

ABANDON_OUTCOMES = (
    "cancelled",  # the job was still queued: cancelled, so no worker spends time on it
    "running",  # a worker had started it: left to finish (its result stays fetchable by id)
    "finished",  # it had already finished: nothing to do
    "unknown",  # the cancel failed (Redis unavailable) or the job record was gone
)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "api_requests", "HTTP requests by route template, method and status", ["route", "method", "code"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "api_request_duration_seconds", "Time to answer, by route template and method",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejections = Counter("api_rejections", "Requests refused, by reason", ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.submissions = Counter(
            "api_submissions", "Accepted submissions by queue and outcome (created, duplicate, cached)",
            ["queue", "outcome"], registry=r,
        )  # fmt: skip
        self.waiting = Gauge(
            "api_queue_waiting_jobs", "Waiting jobs per queue as last read by the admission check",
            ["queue"], registry=r,
        )  # fmt: skip
        self.infer_abandoned = Counter(
            "api_infer_abandoned", "Sync /infer requests whose client disconnected before the answer, "
            "by what became of the job", ["outcome"], registry=r,
        )  # fmt: skip
        for outcome in ABANDON_OUTCOMES:
            self.infer_abandoned.labels(outcome)
        self.inflight_sync = Gauge("api_infer_in_flight", "Synchronous /infer requests in flight", registry=r)
        self.redis_up = Gauge("api_redis_up", "1 if the last Redis read succeeded, else 0", registry=r)
        self.auth_failure_addresses = Gauge(
            "api_auth_failure_addresses", "Buckets of failed authentications (AUTH_FAILURE_LIMIT) held "
            "by this process, one per client address; refilled ones are dropped as new addresses fail",
            registry=r,
        )  # fmt: skip
        self.auth_failure_evictions = Counter(
            "api_auth_failure_evictions", "Failed-authentication buckets dropped before they refilled "
            "because the table was full (a flood from many addresses)", registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request once routing has named its route."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Each request's series, looked up once per label set (``labels()`` locks and validates on
        # every call): as many entries as the series themselves, which the labels already bound.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping the app is answered 500 by the server error handler

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_label(scope)
            method = scope["method"]
            counter = self._counters.get((route, method, status))
            if counter is None:
                counter = self._counters[route, method, status] = self.metrics.requests.labels(
                    route, method, str(status)
                )
            timer = self._timers.get((route, method))
            if timer is None:
                timer = self._timers[route, method] = self.metrics.latency.labels(route, method)
            counter.inc()
            timer.observe(time.perf_counter() - start)


def _route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"
