"""``python -m experiments record`` and the read behind it (``jobqueue.records``) on a real server.

The loop an operator runs: the demo's traffic, recorded from Redis and replayed in the simulator,
has exactly the jobs the demo submitted. The read itself: every stored record of a queue, with
``since`` and queue filters, service times only for jobs that ran to an outcome.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from experiments.record import parse_since
from jobqueue import JobStatus, Keyspace
from jobqueue import sync as jq
from jobqueue.binding import bind_sync
from jobqueue.consumer import Outcome
from jobqueue.records import scan_job_times
from tests.support.demo import REPO, DemoProcess, poisson_trace

scan = bind_sync(scan_job_times)


def experiments(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "experiments", *args]
    return subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=60)


def run_one(client: redis.Redis, queue: str, seconds: float) -> str:
    """Take the next job of ``queue`` and finish it, reporting ``seconds`` of service."""
    (entry,) = jq.fetch(client, queue, "w1", block_ms=100)
    jq.start(client, entry, "w1")
    time.sleep(seconds)
    jq.finish(client, entry, "w1", Outcome.SUCCEEDED, {"ok": True}, seconds)
    return entry.job_id


@pytest.mark.integration
@pytest.mark.slow
def test_the_demos_recorded_traffic_replays_every_submitted_job(redis_url: str, tmp_path: Path) -> None:
    trace = poisson_trace(tmp_path / "trace.csv", rate=0.5, seconds=120, seed=11)
    report_path = tmp_path / "report.json"
    demo = DemoProcess(
        tmp_path, "--trace", str(trace), "--speedup", "30", "--duration", "120", "--max-workers", "4",
        "--report", str(report_path), redis_url=redis_url,
    )  # fmt: skip
    try:
        assert demo.wait(timeout=120) == 0, f"{demo.stdout}\n{demo.stderr}"
    finally:
        demo.kill_leftovers()
    submitted = json.loads(report_path.read_text())["policies"]["demo-live"]["jobs_submitted"]

    recorded = tmp_path / "recorded.csv"
    done = experiments("record", "--redis-url", redis_url, "--speedup", "30", "--out", str(recorded))
    assert done.returncode == 0, done.stderr
    assert f"{submitted} arrivals" in done.stderr and "with service_s" in done.stderr
    assert recorded.read_text() == (demo.out / "recorded.csv").read_text()  # the demo's own export

    replayed = experiments("replay", "--trace", str(recorded), "--service", "trace", "--json", "-")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["jobs"] == submitted


@pytest.mark.integration
def test_scan_finds_every_stored_record_of_a_queue(redis_client: redis.Redis) -> None:
    ids = [jq.submit_job(redis_client, "a:v1", {"n": n}).job_id for n in range(5)]
    other = jq.submit_job(redis_client, "b:v1", {}).job_id
    first = run_one(redis_client, "a:v1", 0.05)

    everything = scan(redis_client, batch=2)  # several SCAN round trips
    assert {t.id for t in everything} == {*ids, other}
    jobs = scan(redis_client, "a:v1", batch=2)
    assert [t.id for t in jobs] == ids  # oldest first
    finished = next(t for t in jobs if t.id == first)
    service, latency = finished.service_seconds, finished.latency_seconds
    assert finished.status is JobStatus.SUCCEEDED and service == pytest.approx(0.05, abs=0.03)
    assert service is not None and latency is not None and latency >= service
    assert all(t.service_seconds is None for t in jobs if t.id != first)  # still queued

    later = scan(redis_client, "a:v1", since=jobs[2].submitted_at)
    assert [t.id for t in later] == ids[2:]


@pytest.mark.integration
def test_a_record_that_does_not_parse_is_skipped_not_fatal(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker fails a job whose record does not decode and keeps the record for result_ttl;
    one such record made every scan raise (and every recording of the queue) for that long."""
    good = jq.submit_job(redis_client, "a:v1", "fine").job_id
    bad = jq.submit_job(redis_client, "a:v1", "poison").job_id
    redis_client.hset(Keyspace().job(bad), "submitted_at", "yesterday")
    with caplog.at_level(logging.WARNING, logger="jobqueue.records"):
        times = scan(redis_client, "a:v1")
    assert [t.id for t in times] == [good]
    assert f"skipped 1 job record(s) that do not parse, e.g. job {bad}:" in caplog.text


@pytest.mark.integration
def test_record_omits_service_times_while_a_job_has_none(redis_client: redis.Redis, redis_url: str) -> None:
    for n in range(2):
        jq.submit_job(redis_client, "a:v1", {"n": n})
    run_one(redis_client, "a:v1", 0.01)
    done = experiments("record", "--redis-url", redis_url)  # the only queue: no --queue needed
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header == "timestamp" and len(rows) == 2 and float(rows[0]) == 0.0
    assert "service_s omitted: 1 job(s) have not run to an outcome" in done.stderr


@pytest.mark.integration
def test_record_asks_which_queue_and_reports_unreachable_servers(
    redis_client: redis.Redis, redis_url: str
) -> None:
    for queue in ("a:v1", "b:v1"):
        jq.submit_job(redis_client, queue, {})
    done = experiments("record", "--redis-url", redis_url)
    assert done.returncode == 2 and "pass --queue" in done.stderr and "a:v1, b:v1" in done.stderr
    done = experiments("record", "--redis-url", redis_url, "--queue", "a:v1", "--since", "1m")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    done = experiments("record", "--redis-url", redis_url, "--queue", "a:v1", "--since", "soon")
    assert done.returncode == 2 and "--since 'soon'" in done.stderr
    done = experiments("record", "--redis-url", "redis://127.0.0.1:1/0")
    assert done.returncode == 2 and done.stderr.startswith("error: cannot read redis://127.0.0.1:1/0")


def test_since_reads_durations_epochs_and_iso_times() -> None:
    now = 1_700_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("15m", now) == now - 900
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1d", now) == now - 86400
    assert parse_since("1699999000.5", now) == 1699999000.5
    assert parse_since("2023-11-14T22:13:20", now) == now  # no zone: UTC, like the records
    assert parse_since("2023-11-14T23:13:20+01:00", now) == now
    with pytest.raises(ValueError, match="expected a duration"):
        parse_since("yesterday", now)
