"""Builds the FastAPI application from an :class:`ApiConfig` (and, in tests, a given Redis client).

Middleware order, outermost first: metrics (every request counted, refusals included), then the
body limit (413 before anything is parsed), then FastAPI's routing and exception handlers (a failed
authentication's among them: :mod:`api.authlimit`). ``/metrics`` is a route here only when
``METRICS_PORT`` is ``PORT``; otherwise ``python -m api`` serves it on a port of its own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from fastapi import FastAPI

from api import authlimit, routes_infer, routes_jobs, routes_legacy, routes_ops
from api.admission import BacklogMonitor, ConcurrencyGate
from api.auth import Authenticator
from api.authlimit import AuthFailureLimiter
from api.config import ApiConfig
from api.errors import install_error_handlers
from api.limits import BodyLimitMiddleware
from api.metrics import ApiMetrics, MetricsMiddleware
from api.redis_client import connect
from api.refresh import Refresher
from api.routing import TrafficRouter
from api.service import JobService
from jobqueue.redis_url import redact

log = logging.getLogger("api")

NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
"""FastAPI's own OpenTelemetry hooks (newer FastAPI versions) switched off. The API's metrics are
Prometheus (``/metrics``); with no OpenTelemetry SDK configured the hooks recorded nothing, yet
looking for one (three provider look-ups per request) cost ~25 µs of CPU per request, a twentieth
of a submission."""


def create_app(config: ApiConfig, client: redis.asyncio.Redis | None = None) -> FastAPI:
    metrics = ApiMetrics()
    redis_client = client or connect(config.redis_url, config.redis_timeout)
    router = TrafficRouter(
        config.traffic_weights, config.default_model, config.default_version, config.settings
    )
    backlog = BacklogMonitor(config.max_waiting, config.settings, metrics, live=router.queues)
    service = JobService(
        client=redis_client,
        config=config,
        metrics=metrics,
        router=router,
        backlog=backlog,
        auth=Authenticator(config.api_keys),
        infer_gate=ConcurrencyGate(config.max_concurrency, metrics),
    )

    def redis_health(ok: bool) -> None:
        metrics.redis_up.set(1 if ok else 0)

    refreshers = [
        Refresher(
            "backlog", lambda: backlog.refresh(redis_client), config.stats_refresh_seconds, redis_health
        ),
        Refresher("traffic", lambda: router.refresh(redis_client), config.traffic_refresh_seconds),
    ]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "serving model_ref=%s on redis %s; kv endpoints: %s; auth %s; rate limit %s; max waiting %s; "
            "failed authentications limited to %s per address; metrics on %s",
            config.model_ref, redact(config.redis_url), ", ".join(config.kv_endpoints) or "(none)",
            "on" if config.auth_enabled else "off", config.rate_limit or "off", config.max_waiting or "off",
            (config.auth_failure_limit or "off") if config.auth_enabled else "(auth off)",
            "the API's port" if config.metrics_on_api_port
            else f"{config.metrics_host}:{config.metrics_port}",
        )  # fmt: skip
        backlog.watch(router.resolve(config.default_model, config.default_version))
        for r in refreshers:
            await r.run_once()  # warm caches before the first request; a down Redis is not fatal
            r.start()
        try:
            yield
        finally:
            for r in refreshers:
                await r.stop()
            if client is None:
                await redis_client.aclose()

    app = FastAPI(
        title="Inference job API",
        version="1.0.0",
        description="Submit inference jobs to model workers through Redis; poll, cancel, or wait.",
        lifespan=lifespan,
        **NO_NATIVE_TELEMETRY,
    )
    app.state.service = service
    install_error_handlers(app, metrics)
    limit = config.auth_failure_limit if config.auth_enabled else None
    authlimit.install(app, AuthFailureLimiter(limit, metrics) if limit else None, metrics)
    for module in (routes_jobs, routes_legacy, routes_infer, routes_ops):
        app.include_router(module.router)
    if config.metrics_on_api_port:
        app.include_router(routes_ops.metrics_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
