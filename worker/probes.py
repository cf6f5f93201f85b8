"""Kubernetes probes and Prometheus metrics over HTTP (stdlib server on a daemon thread).

``/readyz`` is the readiness probe: 200 only once the model is set up, so the pod's Ready time is
the real end of warm-up (the autoscaler measures startup from it); 503 again while draining.
``/healthz`` is the liveness probe: 200 while the process serves HTTP (a Redis outage is not a
reason to restart the pod); its body says whether the heartbeat reaches Redis, and since when it
has not. ``/metrics`` is the Prometheus exposition, ``worker_redis_up`` included.

Why readiness does not follow Redis. A worker pulls its jobs: no Service routes to it, so a
NotReady worker is kept from nothing, and while Redis is down no worker can take a job anyway,
so there is no healthier peer to prefer. What reads readiness is the scaling around the pod, and
a Redis blip would turn every worker NotReady at once and mislead all of it:

- the autoscaler counts Ready pods as serving capacity and the others as still warming up, and
  takes a pod's creation-to-Ready time as its warm-up: a flap moves the Ready transition later,
  and a pod first seen Ready after it (a daemon restarted meanwhile) reports a warm-up that
  includes the outage;
- a ReplicaSet scaling down deletes NotReady pods first, whatever their deletion cost, so busy
  workers lose the protection the autoscaler gives them (``scale_down_floor``);
- the startup probe reads ``/readyz`` too: a pod that finished its setup during the outage would
  count as not started, and a long outage would restart it (a second warm-up);
- the PodDisruptionBudget (at most one worker unavailable) would block node drains, and a rollout
  (``maxUnavailable: 0``) would stall, for as long as the outage lasts.

Meanwhile the autoscaler cannot read the queue either and holds the replica count, and the worker
waits the outage out (``worker.retry``). So the outage is reported where people and alerts look,
and the probes that drive the scaling report what they measure: set up, not draining.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

from prometheus_client import CONTENT_TYPE_LATEST

from jobqueue.httpreply import BoundedHTTPServer, send_reply
from worker.metrics import WorkerMetrics
from worker.status import LiveStatus


def redis_state(status: LiveStatus) -> str:
    """One line for /healthz: the heartbeat reaches Redis, or for how long it has not and why."""
    outage = status.redis_outage
    if outage is None:
        return "reachable"
    seconds, error = outage
    return f"unreachable for {seconds:.0f} s ({error})"


def start_probe_server(
    status: LiveStatus, metrics: WorkerMetrics, port: int, host: str = "0.0.0.0"
) -> BoundedHTTPServer:
    """Serve on all interfaces by default: the kubelet probes the pod IP.

    A stalled or idle connection is closed after 10 s, and at most 32 are served at once, the
    oldest closed to make room (see :class:`~jobqueue.httpreply.BoundedHTTPServer`): half-sent
    requests can no longer pile up threads, nor keep the probes from being answered."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/readyz":
                ok = status.ready
                send_reply(self, 200 if ok else 503, f"{status.state.value}\n".encode(), "text/plain")
            elif path == "/healthz":
                send_reply(self, 200, f"ok\nredis: {redis_state(status)}\n".encode(), "text/plain")
            elif path == "/metrics":
                metrics.state.labels(metrics.queue).state(status.state.value)
                metrics.redis_up.labels(metrics.queue).set(1 if status.redis_outage is None else 0)
                send_reply(self, 200, metrics.render(), CONTENT_TYPE_LATEST)
            else:
                send_reply(self, 404, b"not found\n", "text/plain")

        def log_message(self, format: str, *args: object) -> None:  # probes every few s: keep logs quiet
            return

    server = BoundedHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
