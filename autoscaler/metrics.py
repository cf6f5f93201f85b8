"""Prometheus metrics and the HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``).

Every per-target series carries a ``target`` label (the config's target name). The metrics are fed
from :class:`~autoscaler.loop.TickReport` objects, so what is exported is exactly what the loop
decided on, never a second reading. Each daemon owns its registry, which keeps tests independent.

The server is the standard library's threading HTTP server, bounded in connections and in time
(:class:`~jobqueue.httpreply.BoundedHTTPServer`, shared with the worker's probes): three read-only
endpoints do not justify an ASGI stack in the control plane's process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from autoscaler.loop import TickReport
from jobqueue.httpreply import ThreadedServer, send_reply

log = logging.getLogger("autoscaler.metrics")

Probe = Callable[[], tuple[bool, dict[str, Any]]]
"""A health check: (ok, JSON-able detail)."""

_PER_TARGET_GAUGES = {
    "desired_replicas": "Replica count the policy asked for on the last tick.",
    "current_replicas": "Replica count set on the target (its spec) on the last tick.",
    "ready_replicas": "Replicas serving jobs.",
    "starting_replicas": "Replicas created but not Ready yet (warming up).",
    "draining_replicas": "Replicas finishing their last job before exiting.",
    "waiting_jobs": "Jobs queued and not started.",
    "in_flight_jobs": "Jobs being served.",
    "arrival_rate": "Arrival rate over the short window, jobs per second.",
    "forecast_rate": "Forecast mean arrival rate over the startup horizon, jobs per second.",
    "forecast_rate_upper": "Upper quantile of the forecast arrival rate, jobs per second.",
    "standing_pool_replicas": (
        "Replicas the learned standing pool keeps warm for bursts that end before a warm-up does "
        "(startup-aware; 0: none). Replicas held above the load's own need in quiet minutes are these."
    ),
    "startup_seconds": "Startup (creation to Ready) estimate the policy plans with (p90 once measured).",
    "service_seconds": "Service-time estimate the policy plans with.",
    "season_seconds": (
        "Season length the forecast uses: configured, or the period found in the arrivals of "
        "traffic on a clock (0: none)."
    ),
    "slo_seconds": "Latency bound (submission to completion) the target is sized for.",
    "signal_age_seconds": "Age of the newest fresh queue signals.",
    "signals_stale": (
        "1 when the last tick held because signals were missing or stale, or failed before deciding "
        "(target unreadable, policy error)."
    ),
    "shadow": "1 when the target is in shadow mode (decisions are published, not applied).",
    "last_tick_timestamp_seconds": "When the target's loop last ticked (epoch seconds).",
    "state_saved_timestamp_seconds": (
        "When this replica last saved the learned policy state to Redis (epoch seconds; the leader "
        "saves every state.save_every_seconds, so an old value means saves fail)."
    ),
}
_ESTIMATE_GAUGES = (
    ("arrival_rate", "rate_now"),
    ("forecast_rate", "forecast_mean"),
    ("forecast_rate_upper", "forecast_upper"),
    ("standing_pool_replicas", "standing_pool"),
    ("startup_seconds", "startup_seconds"),
    ("service_seconds", "service_seconds"),
    ("season_seconds", "season_seconds"),
)
"""Gauges fed from the policy's estimates (``TickReport.estimates``): (gauge, estimate key)."""
_ESTIMATED = frozenset(gauge for gauge, _ in _ESTIMATE_GAUGES)
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Job latency histogram bounds (seconds): dense around the usual SLOs of a few seconds to a minute."""


class Metrics:
    """The daemon's metric families and how a tick report updates them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.gauges = {
            name: Gauge(f"autoscaler_{name}", doc, ["target"], registry=r)
            for name, doc in _PER_TARGET_GAUGES.items()
        }
        self.decisions = Counter(
            "autoscaler_decisions", "Decisions by the term that dominated.", ["target", "reason"], registry=r
        )
        self.scale_actions = Counter(
            "autoscaler_scale_actions",
            "Replica count changes applied to the target, by direction (up or down).",
            ["target", "direction"],
            registry=r,
        )
        self.errors = Counter(
            "autoscaler_errors", "Failed reads and actions by kind.", ["target", "kind"], registry=r
        )
        self.policy_resets = Counter(
            "autoscaler_policy_resets",
            "Times the policy was replaced by a fresh one (cold start, same config) after "
            "policy_reset_after_errors ticks in a row on which it raised.",
            ["target"],
            registry=r,
        )
        # What the scaling is for: how long jobs took, read from the queue's completions stream.
        self.job_latency = Histogram(
            "autoscaler_job_latency_seconds",
            "Submission to final answer of the jobs that finished while this process watched.",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs_finished = Counter(
            "autoscaler_jobs_finished",
            "Jobs that got their final answer: succeeded, failed or dead-lettered (worker died, too).",
            ["target"],
            registry=r,
        )
        self.jobs_within_slo = Counter(
            "autoscaler_jobs_within_slo",
            "Finished jobs whose latency was within the target's slo_seconds. SLO attainment is "
            "rate(autoscaler_jobs_within_slo_total) / rate(autoscaler_jobs_finished_total).",
            ["target"],
            registry=r,
        )
        self.leader = Gauge("autoscaler_leader", "1 when this replica holds the lease and acts.", registry=r)
        self.config_valid = Gauge(
            "autoscaler_config_valid",
            "0 when the newest config file was rejected (the old one is kept).",
            registry=r,
        )
        self.config_reloads = Counter(
            "autoscaler_config_reloads", "Config file changes seen, by result.", ["result"], registry=r
        )
        self._seen: dict[str, set[tuple[Counter, str]]] = {}  # labelled counter series per target
        self._service_above_slo: set[str] = set()  # targets told so (see _say_if_service_reaches_slo)
        self._lock = threading.Lock()

    def observe_tick(self, report: TickReport) -> None:
        """Fold one tick into the series of its target (the loop's observer hook)."""
        target = report.target
        # Created at once (0 until set), except the estimates: a policy without one has no series.
        g = {name: gauge.labels(target) for name, gauge in self.gauges.items() if name not in _ESTIMATED}
        g["last_tick_timestamp_seconds"].set(report.now)
        g["shadow"].set(float(report.shadow))
        self.leader.set(float(report.leader))
        if report.signal_age is not None:
            g["signal_age_seconds"].set(report.signal_age)
        if report.state_saved_at is not None:
            g["state_saved_timestamp_seconds"].set(report.state_saved_at)
        if report.slo_seconds is not None:
            g["slo_seconds"].set(report.slo_seconds)
        if report.error:
            self._count(self.errors, target, report.error)
        resets = self.policy_resets.labels(target)  # created at 0, so increase() has a series from the start
        if report.policy_reset:
            resets.inc()
        self._observe_latencies(target, report.latencies, report.slo_seconds)
        snap, decision = report.snapshot, report.decision
        if snap is None or decision is None:
            # A failed tick decided on nothing: the replica count is frozen, and the gauge must say
            # so rather than keep the "fresh" of the last tick that went well.
            g["signals_stale"].set(1.0)
            return
        g["signals_stale"].set(float(snap.stale))
        g["desired_replicas"].set(decision.desired)
        g["current_replicas"].set(snap.current_replicas)
        g["ready_replicas"].set(snap.ready)
        g["starting_replicas"].set(snap.starting)
        g["draining_replicas"].set(snap.draining)
        if not snap.stale:  # keep the last known queue numbers rather than exporting zeros
            g["waiting_jobs"].set(snap.waiting)
            g["in_flight_jobs"].set(snap.in_flight)
        estimates = report.estimates or {}
        self._say_if_service_reaches_slo(target, estimates.get("service_seconds"), report.slo_seconds)
        for gauge, key in _ESTIMATE_GAUGES:
            if key in estimates:
                self.gauges[gauge].labels(target).set(estimates[key])
            elif not snap.stale:
                # A fresh tick's policy does not estimate this (a hot reload switched it to keda,
                # kpa or static): the series goes rather than claim the old policy's last value for
                # ever. A stale hold estimates nothing new and keeps the last values, as the queue
                # numbers above do.
                with contextlib.suppress(KeyError):
                    self.gauges[gauge].remove(target)
        self._count(self.decisions, target, decision.reason)
        # Only a change of the count the target really made is a scale action: not a re-apply of
        # the same count (to steer which pods a scale-down not finished yet lets go), nor a
        # decision the target held to spare busy pods, found overtaken by someone else's change,
        # or refused. Counting what was asked showed a flapping autoscaler where the count never
        # moved.
        if report.scaled_to is not None and report.scaled_to != snap.current_replicas:
            direction = "up" if report.scaled_to > snap.current_replicas else "down"
            self._count(self.scale_actions, target, direction)

    def _say_if_service_reaches_slo(self, target: str, service: float | None, slo: float | None) -> None:
        """Log once, when the service time the policy measured reaches the target's SLO, that no
        replica count can meet it (every job's latency is at least its service): the policy goes on
        sizing as it does, and without this line its pool grew towards max_replicas with nothing
        saying why no job was within the SLO. Said again only after it fell below in between."""
        if service is None or slo is None:
            return
        above = service >= slo
        with self._lock:
            if above == (target in self._service_above_slo):
                return
            if above:
                self._service_above_slo.add(target)
            else:
                self._service_above_slo.discard(target)
        fields = {"target": target, "service_seconds": round(service, 3), "slo_seconds": slo}
        if above:
            log.warning(
                "the measured service time is at or above slo_seconds: no replica count can meet "
                "the SLO (every job takes at least its service time); raise slo_seconds or make jobs faster",
                extra={"fields": fields},
            )
        else:
            log.info("the measured service time is below slo_seconds again", extra={"fields": fields})

    def _observe_latencies(self, target: str, latencies: tuple[float, ...], slo: float | None) -> None:
        histogram = self.job_latency.labels(target)
        for latency in latencies:
            histogram.observe(latency)
        self.jobs_finished.labels(target).inc(len(latencies))
        within = self.jobs_within_slo.labels(target)  # created at 0, so rate() has a series from the start
        if slo is not None:
            within.inc(sum(1 for latency in latencies if latency <= slo))

    def _count(self, counter: Counter, target: str, label: str) -> None:
        counter.labels(target, label).inc()
        with self._lock:
            self._seen.setdefault(target, set()).add((counter, label))

    def forget_target(self, target: str) -> None:
        """Drop a removed target's series so dashboards do not show a ghost."""
        families = (
            *self.gauges.values(),
            self.job_latency,
            self.jobs_finished,
            self.jobs_within_slo,
            self.policy_resets,
        )
        for family in families:
            with contextlib.suppress(KeyError):
                family.remove(target)
        with self._lock:
            seen = self._seen.pop(target, set())
            self._service_above_slo.discard(target)
        for counter, label in seen:
            with contextlib.suppress(KeyError):
                counter.remove(target, label)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            send_reply(self, 200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            probe = self.server.health if path == "/healthz" else self.server.ready
            try:
                ok, detail = probe()
            except Exception as exc:  # a broken probe is itself a failed probe
                ok, detail = False, {"error": str(exc)}
            body = json.dumps({"status": "ok" if ok else "fail", **detail}, default=str).encode()
            send_reply(self, 200 if ok else 503, body, "application/json")
        else:
            send_reply(self, 404, b"not found\n", "text/plain")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class ListenError(OSError):
    """The HTTP server cannot listen on ``host``:``port``: the address, its name or the port is the
    problem (``errno`` and ``strerror`` are the cause's; ``cause`` is a ``socket.gaierror`` when the
    name did not resolve)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port, self.cause = host, port, cause


class MetricsServer(ThreadedServer):
    """Serves the endpoints on a daemon thread; ``port`` 0 picks a free port (see ``.port``).

    ``host`` may be an IPv4 or IPv6 address or a name (see
    :func:`~jobqueue.httpreply.address_family`); ``::`` takes IPv4 connections too where the system
    allows. Failing to listen raises :class:`ListenError`.
    A stalled or idle connection is closed after 10 s, and at most 32 are served at once (see
    :class:`~jobqueue.httpreply.BoundedHTTPServer`).
    """

    def __init__(self, host: str, port: int, metrics: Metrics, health: Probe, ready: Probe) -> None:
        self.metrics = metrics
        self.health = health
        self.ready = ready
        try:
            super().__init__(host, port, _Handler, "http")
        except OSError as exc:
            raise ListenError(host, port, exc) from exc
