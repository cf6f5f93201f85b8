"""The whole daemon against a real Valkey server and real ``python -m worker`` processes.

A load step hits a queue served by one warm worker. The daemon (local target, 0.5 s ticks, 2 s model
warm-up) must order capacity within a tick or two of the step, keep the backlog well below what the
single worker would have accumulated, then give the capacity back once the load is gone and the
scale-down window has passed, without losing or repeating a single job.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from autoscaler.config import parse_config
from autoscaler.daemon import Daemon
from autoscaler.loop import TickReport
from autoscaler.metrics import Metrics
from autoscaler.targets.local import LocalProcessTarget
from jobqueue import JobStatus
from jobqueue import sync as jq
from jobqueue.keys import Keyspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "itest:v1"
TICK = 0.5
RATE = 14.0  # jobs/s: ~3 workers' worth at 0.2 s per job
STEP_SECONDS = 8.0
SLO_SECONDS = 2.0

CONFIG = """
host: 127.0.0.1
port: 0
targets:
  - name: itest
    source: {{kind: stream, queue: "{queue}", redis_url: "{url}", worker_ttl_seconds: 3}}
    target:
      kind: local
      log_dir: "{logs}"
      termination_grace_seconds: 10
      env:
        MODEL_SETUP_SECONDS: "2"
        MODEL_PREDICT_SECONDS: "0.2"
        HEARTBEAT_SECONDS: "0.5"
        WORKER_TTL: "3"
        VISIBILITY_TIMEOUT: "5"
        POLL_SECONDS: "0.2"
    min_replicas: 1
    max_replicas: 8
    slo_seconds: {slo}
    startup_seconds: 2
    service_seconds: 0.2
    tick_seconds: {tick}
"""


class RecordingMetrics(Metrics):
    """The real metrics, plus every tick report kept for the assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[TickReport] = []
        self._reports_lock = threading.Lock()

    def observe_tick(self, report: TickReport) -> None:
        super().observe_tick(report)
        with self._reports_lock:
            self.reports.append(report)

    def since(self, start: float) -> list[TickReport]:
        with self._reports_lock:
            return [r for r in self.reports if r.now >= start and r.decision is not None]


def wait_for(
    what: str, predicate: Callable[[], bool], timeout: float, context: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}\n{context()}"
        time.sleep(0.1)


def timeline(reports: list[TickReport], start: float) -> str:
    """One line per tick, to read what the daemon did when an assertion fails."""
    lines = []
    for r in reports:
        if r.snapshot is None or r.decision is None:
            lines.append(f"{r.now - start:6.2f} error={r.error}")
            continue
        s, d = r.snapshot, r.decision
        terms = " ".join(f"{k}={v:.2f}" for k, v in d.terms.items())
        lines.append(
            f"{r.now - start:6.2f} cur={s.current_replicas} ready={s.ready} starting={s.starting} "
            f"draining={s.draining} busy={sum(p.busy_slots for p in s.pods)} waiting={s.waiting} "
            f"inflight={s.in_flight} arr={s.arrivals} -> {d.desired} {d.reason} acted={r.acted} {terms}"
        )
    return "\n".join(lines)


def http_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def daemon(redis_url: str, tmp_path: Path) -> Iterator[tuple[Daemon, RecordingMetrics]]:
    text = CONFIG.format(queue=QUEUE, url=redis_url, logs=tmp_path / "workers", tick=TICK, slo=SLO_SECONDS)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text)
    metrics = RecordingMetrics()
    running = Daemon(
        parse_config(text, allow_local_targets=True),
        config_path=config_path,
        metrics=metrics,
        allow_local_targets=True,
    ).start()
    try:
        yield running, metrics
    finally:
        running.stop()


def submit_step(client: redis.Redis, rate: float, seconds: float) -> list[str]:
    """Submit at a steady ``rate`` for ``seconds`` (paced on the monotonic clock)."""
    ids: list[str] = []
    start = time.monotonic()
    total = round(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ids.append(jq.submit_job(client, QUEUE, {"n": n}).job_id)
    return ids


def test_load_step_scales_up_ahead_of_the_backlog_and_back_down_without_losing_a_job(
    daemon: tuple[Daemon, RecordingMetrics], redis_client: redis.Redis
) -> None:
    running, metrics = daemon
    loop = running.loops["itest"]
    target = loop.target
    assert isinstance(target, LocalProcessTarget)

    def ready() -> int:
        report = loop.last_report
        return report.snapshot.ready if report and report.snapshot else 0

    wait_for("the min_replicas worker to be ready", lambda: ready() == 1, 20)
    assert running.port is not None
    status, body = http_json(running.port, "/readyz")
    assert status == 200 and body["config"]["valid"] is True and body["config"]["error"] is None

    step_at = time.time()
    ids = submit_step(redis_client, RATE, STEP_SECONDS)
    during = metrics.since(step_at)

    # Capacity is ordered within a tick or two of the step, not once a backlog has built.
    first_up = next(r for r in during if r.decision is not None and r.decision.desired > 1)
    assert first_up.now - step_at <= 2 * TICK + 0.6, (
        f"first scale-up {first_up.now - step_at:.2f} s after the step"
    )
    assert first_up.snapshot is not None and first_up.snapshot.waiting <= 10
    peak = max(r.decision.desired for r in during if r.decision is not None)
    assert 3 <= peak <= 8
    # One worker alone would have fallen (RATE - 5) * STEP_SECONDS = 72 jobs behind by the end of the
    # step. With the ordered capacity the backlog stops growing about one warm-up after the step and
    # is mostly served while the load still lasts.
    alone = (RATE - 5.0) * STEP_SECONDS
    waiting = [r.snapshot.waiting for r in during if r.snapshot is not None]
    report = timeline(during, step_at)
    assert max(waiting) < 0.6 * alone, f"backlog peaked at {max(waiting)}\n{report}"
    assert waiting[-1] < 0.25 * alone, f"backlog at the end of the step: {waiting[-1]}\n{report}"

    # Every job completes, exactly once.
    def all_done() -> bool:
        jobs = [jq.get_job(redis_client, i) for i in ids]
        return all(j is not None and j.status.terminal for j in jobs)

    wait_for("every job to finish", all_done, 30)
    jobs = [jq.get_job(redis_client, i) for i in ids]
    assert all(j is not None and j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in jobs)
    completions = jq.read_queue_stats(redis_client, QUEUE, limit=10_000).completions
    assert sorted(c.job_id for c in completions) == sorted(ids)  # no job ran twice
    assert jq.read_dead_letters(redis_client, QUEUE) == []

    # Capacity is given back after the scale-down window, down to min_replicas, workers drained.
    wait_for(
        "scale-down to min_replicas",
        lambda: len(target.workers) == 1,
        30,
        lambda: timeline(metrics.since(step_at), step_at),
    )
    after = metrics.since(step_at)
    assert after[-1].decision is not None and after[-1].decision.desired == 1
    assert any(r.decision is not None and r.decision.reason == "scale-down-window" for r in after)

    # Warm-ups were measured (spawn -> ready), not taken from the config.
    startups = [s for r in after if r.snapshot is not None for s in r.snapshot.startup_times]
    assert startups and all(s >= 2.0 for s in startups)

    status, body = http_json(running.port, "/readyz")
    assert status == 200 and body["targets"]["itest"]["ticked"]
    with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/metrics", timeout=2) as response:
        exported = response.read().decode()
    assert 'autoscaler_desired_replicas{target="itest"} 1.0' in exported
    assert 'autoscaler_decisions_total{reason="scale-down-window",target="itest"}' in exported
    assert "autoscaler_config_valid 1.0" in exported
    # Every job's latency reached the SLO counters, read from the completions stream alone: the
    # same numbers as the job records' own submitted_at -> finished_at.
    within = sum(
        1
        for j in jobs
        if j is not None and j.finished_at is not None and j.finished_at - j.submitted_at <= SLO_SECONDS
    )
    assert f'autoscaler_jobs_finished_total{{target="itest"}} {float(len(ids))}' in exported
    assert f'autoscaler_jobs_within_slo_total{{target="itest"}} {float(within)}' in exported

    # The leader keeps what it learned in Redis, for the next process to start from.
    key = Keyspace().autoscaler_state("itest")

    def saved_startups() -> list[float]:
        raw = redis_client.get(key)
        document = json.loads(raw) if raw else {}
        if document.get("policy") != "startup-aware" or document.get("target") != "itest":
            return []
        return list(document["state"]["_startup"]["object"]["_samples"]["deque"])

    # Those of this step, and the min_replicas worker's from before it.
    wait_for("the measured warm-ups to be saved", lambda: set(startups) < set(saved_startups()), 35)


def test_a_bad_config_reload_keeps_scaling_with_the_old_one(
    daemon: tuple[Daemon, RecordingMetrics], tmp_path: Path
) -> None:
    running, metrics = daemon
    assert running.port is not None
    watcher = running.watcher
    assert watcher is not None
    wait_for("the first tick", lambda: running.loops["itest"].last_report is not None, 10)
    (tmp_path / "config.yaml").write_text("targets: [{name: itest, source: {kind: stream}}]")
    assert not watcher.check()
    status, body = http_json(running.port, "/readyz")
    assert status == 200  # still scaling, with the previous config: degraded, not unready
    config = body["config"]
    assert (
        isinstance(config, dict) and config["valid"] is False and "targets[0].source.queue" in config["error"]
    )
    assert "degraded" in body
    assert "autoscaler_config_valid 0.0" in metrics.render().decode()
    ticks = len(metrics.reports)
    wait_for("the old config to keep ticking", lambda: len(metrics.reports) > ticks + 1, 5)
