"""The whole daemon against the cluster: ``python -m autoscaler run`` (a subprocess, authenticating
with the manifests' ServiceAccount token) reads a real Valkey queue and scales the worker Deployment.

The worker pods are kwok's, so nothing runs in them; this test plays the kubelet: for every worker
pod that kwok has made Ready it starts a real ``python -m worker`` process named after the pod
(HOSTNAME = pod name, as in the cluster), and SIGTERMs it when the pod is deleted. Load ramps up;
the Deployment's replicas must rise while the queue is still (nearly) empty, i.e. before a backlog
forms, which a queue-length scaler such as KEDA cannot do by construction.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes import client as k8s

from jobqueue import sync as jq
from tests.e2e.kube import REPO, Install, wait_for
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.e2e

QUEUE = "reference:v1"
STARTUP = 3.0  # kwok's ready delay for the worker pods = the simulated model warm-up
SERVICE = 1.0  # MODEL_PREDICT_SECONDS of the worker processes
LEASE = "startup-autoscaler"


def daemon_config(installed: Install, redis_url: str, **target: Any) -> dict[str, Any]:
    """The daemon's config file; ``target`` overrides fields of the one target."""
    return {
        "port": 0,
        "log_level": "INFO",
        "leader_election": {
            "enabled": True,
            "lease_name": LEASE,
            "lease_namespace": installed.namespace,
            # The margin (lease - renew deadline) must exceed the target's write timeout (2 s).
            "lease_duration_seconds": 4.5,
            "renew_deadline_seconds": 2,
            "retry_period_seconds": 0.5,
        },
        "targets": [
            {
                "name": "reference",
                "source": {"kind": "stream", "queue": QUEUE, "redis_url": redis_url, "worker_ttl_seconds": 3},
                "target": {
                    "kind": "kubernetes",
                    "namespace": installed.namespace,
                    "workload_kind": "Deployment",
                    "name": "worker",
                },
                "min_replicas": 1,
                "max_replicas": 10,
                "slo_seconds": 5,
                "startup_seconds": STARTUP,
                "service_seconds": SERVICE,
                "tick_seconds": 1,
                "policy": "startup-aware",
                **target,
            }
        ],
    }


class Kubelet:
    """Runs a real worker process for each Ready worker pod; drains it when the pod goes."""

    def __init__(self, installed: Install, pool: WorkerPool) -> None:
        self.installed = installed
        self.pool = pool
        self.running: dict[str, Any] = {}

    def sync(self) -> int:
        """Start/stop worker processes to match the Ready pods; returns how many run."""
        pods = self.installed.core.list_namespaced_pod(
            self.installed.namespace, label_selector="app.kubernetes.io/name=worker"
        ).items
        ready = {
            p.metadata.name
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        }
        for name in sorted(ready - self.running.keys()):
            self.running[name] = self.pool.spawn(
                name,
                ready=False,
                QUEUE=QUEUE,
                MODEL_SETUP_SECONDS="0",  # the warm-up was kwok's ready delay
                MODEL_PREDICT_SECONDS=str(SERVICE),
                HEARTBEAT_SECONDS="0.5",
                WORKER_TTL="3",
            )
        for name in sorted(self.running.keys() - ready):
            worker = self.running.pop(name)
            if worker.proc.poll() is None:
                worker.signal(signal.SIGTERM)
        return len(self.running)


@pytest.fixture
def start_daemon(installed: Install, redis_url: str, tmp_path: Path) -> Any:
    """Starts ``python -m autoscaler run`` with the given target overrides; stops it afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**target: Any) -> tuple[subprocess.Popen[bytes], Path]:
        installed.set_worker_ready_delay(STARTUP)
        installed.wait_worker_rollout()
        config = tmp_path / "autoscaler.yaml"
        config.write_text(yaml.safe_dump(daemon_config(installed, redis_url, **target)))
        log_path = tmp_path / "daemon.log"
        env = {
            **os.environ,
            "KUBECONFIG": str(installed.sa_kubeconfig()),  # the ServiceAccount's token, nothing else
            "HOSTNAME": "autoscaler-e2e",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "autoscaler", "run", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc, log_path

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def daemon(start_daemon: Any) -> Any:
    return start_daemon()


def lease_holder(installed: Install) -> str | None:
    try:
        lease: Any = k8s.CoordinationV1Api(installed.admin).read_namespaced_lease(LEASE, installed.namespace)
    except Exception:
        return None
    return lease.spec.holder_identity or None


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def decisions(path: Path) -> list[dict[str, Any]]:
    """The daemon's decision log lines so far (one per tick, and one per answer of the watch)."""
    # Only whole lines: the daemon may be halfway through writing the last one.
    lines = path.read_text(errors="replace").split("\n")[:-1]
    logged = (json.loads(line) for line in lines if line.startswith("{"))
    return [d for d in logged if d.get("msg") == "decision"]


def test_replicas_rise_before_a_backlog_forms(
    installed: Install, daemon: Any, worker_pool: WorkerPool, redis_url: str
) -> None:
    proc, log_path = daemon
    client = redis.Redis.from_url(redis_url)
    kubelet = Kubelet(installed, worker_pool)
    wait_for(
        "the daemon to take the lease",
        lambda: (lease_holder(installed) or "").startswith("autoscaler-e2e"),
        30,
    )
    assert proc.poll() is None, tail(log_path)

    def tick_world() -> tuple[int, int]:
        kubelet.sync()
        return installed.worker_replicas(), jq.read_queue_stats(client, QUEUE).waiting

    # Idle: one warm worker, no load; the daemon holds min_replicas.
    wait_for("a worker process for the first pod", kubelet.sync, 20)
    time.sleep(3)
    initial, _ = tick_world()
    assert initial == 1

    # A ramp from 0.5 to 5 jobs/s over 24 s; one worker serves 1 job/s.
    samples: list[tuple[float, int, int]] = []
    submitted, start = 0, time.monotonic()
    ramp = 24.0
    while (elapsed := time.monotonic() - start) < ramp:
        due = int(0.5 * elapsed + 4.5 * elapsed**2 / (2 * ramp))  # integral of the rate
        while submitted < due:
            jq.submit_job(client, QUEUE, {"n": submitted})
            submitted += 1
        replicas, waiting = tick_world()
        samples.append((elapsed, replicas, waiting))
        assert proc.poll() is None, tail(log_path)
        time.sleep(0.2)

    first_up = next((s for s in samples if s[1] > initial), None)
    report = "\n".join(f"t={t:5.1f}s replicas={r:2d} waiting={w:3d}" for t, r, w in samples[::5])
    print(f"first scale-up at {first_up}\n{report}")  # shown with -s, and with the failure below
    assert first_up is not None, f"the daemon never scaled up\n{report}\n{tail(log_path)}"
    # The first scale-up came while the queue was still (nearly) empty: capacity was ordered from
    # the rising arrival rate and the warm-up time, not from a backlog. (KEDA's default target is a
    # listLength of 5 per replica.)
    assert first_up[2] <= 2, f"scaled up only once {first_up[2]} jobs were waiting\n{report}"
    # Capacity kept ahead of the ramp: the queue never built up a backlog of more than a few seconds.
    peak_replicas = max(s[1] for s in samples)
    assert peak_replicas >= 4, report
    assert max(s[2] for s in samples) <= 10, report

    # The daemon records why it scaled, on the Deployment, like the HPA does.
    events = installed.core.list_namespaced_event(
        installed.namespace, field_selector="involvedObject.name=worker,reason=SuccessfulRescale"
    ).items
    assert any(e.reporting_instance == "autoscaler-e2e" for e in events)

    # A decision log line per tick, with its explanation.
    assert decisions(log_path), tail(log_path)

    # SIGTERM: the daemon stops and releases the lease for a standby.
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert lease_holder(installed) is None, tail(log_path)
    client.close()


def test_a_burst_is_answered_between_ticks(installed: Install, start_daemon: Any, redis_url: str) -> None:
    """With a 20 s tick, a burst submitted just after a tick gets its pods within seconds."""
    proc, log_path = start_daemon(tick_seconds=20, watch_seconds=0.5)
    client = redis.Redis.from_url(redis_url)
    wait_for(
        "the daemon to take the lease",
        lambda: (lease_holder(installed) or "").startswith("autoscaler-e2e"),
        30,
    )
    wait_for("two ticks", lambda: len(decisions(log_path)) >= 2, 60, interval=0.1)
    ticks = len(decisions(log_path))
    wait_for("the next tick", lambda: len(decisions(log_path)) > ticks, 30, interval=0.05)
    ticked = time.monotonic()
    before = installed.worker_replicas()
    for n in range(60):  # no worker runs in this test: the queue stays as submitted
        jq.submit_job(client, QUEUE, {"n": n})
    risen = wait_for("a scale-up before the next tick", lambda: installed.worker_replicas() > before, 15, 0.1)
    took = time.monotonic() - ticked
    # The decision is logged once the scale has been written, so its line can trail the new count.
    answered = wait_for(
        "the surge decision in the log",
        lambda: [d for d in decisions(log_path) if d.get("reason") == "surge"],
        5,
        0.05,
    )
    assert risen and answered, tail(log_path)
    assert took < 10, f"scaled up {took:.1f} s after the tick: that was the next tick, not the watch"
    assert answered[0]["acted"] and answered[0]["desired"] > before
    assert answered[0]["terms"]["surge_tail_probability"] < 1e-5
    assert proc.poll() is None, tail(log_path)
    client.close()
