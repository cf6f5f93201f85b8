"""Retiring a version (``python -m api.traffic retire``) against a real Valkey: it refuses while a
job could be lost or the version is still routed to, moves waiting jobs to a version whose worker
serves them, changes nothing on a dry run, and leaves no key of the queue behind."""

from __future__ import annotations

import io
import threading
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import traffic
from autoscaler.sources.redis_source import StreamSource
from jobqueue import Entry, JobStatus, Keyspace, Priority, Settings, WorkerInfo, WorkerState, codec
from jobqueue import retire as retire_ops
from jobqueue import sync as jq
from jobqueue.backlog import Backlog, read_backlog
from jobqueue.binding import bind_sync
from jobqueue.consumer import Outcome
from jobqueue.driver import decode
from jobqueue.ops import idempotency_holder
from jobqueue.retire import queue_keys
from jobqueue.retire_checks import DEAD_LETTER_KEEP_SECONDS, RetireOptions
from jobqueue.retire_run import Pacing, retire_version
from jobqueue.traffic import set_traffic
from tests.support.workers import WorkerPool

pytestmark = pytest.mark.integration

KS = Keyspace()
V1, V2 = "m:v1", "m:v2"
sweep = bind_sync(retire_ops.sweep_queue)


@pytest.fixture
def cli_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI talks to the test server, outside any API environment."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    for name in ("KEY_PREFIX", "MODEL_REF", "QUEUE", "TRAFFIC_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = traffic.main(["retire", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(r: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's serialised value and whether it expires: equal snapshots, nothing written."""
    return {k: (r.dump(k), r.ttl(k) >= 0) for k in sorted(r.scan_iter())}


def submit(r: redis.Redis, queue: str, n: int, priority: Priority = Priority.NORMAL) -> list[str]:
    return [jq.submit_job(r, queue, {"n": i}, priority=priority).job_id for i in range(n)]


def hold(r: redis.Redis, queue: str, worker: str) -> Entry:
    """Take one job of ``queue`` for ``worker`` and start it: in flight until it is finished."""
    [entry] = jq.fetch(r, queue, worker, block_ms=50)
    assert jq.start(r, entry, worker).job is not None
    return entry


def run_one(r: redis.Redis, queue: str, worker: str, outcome: Outcome = Outcome.SUCCEEDED) -> None:
    """Take one job of ``queue`` and end it with ``outcome`` (a completion, or a dead letter)."""
    entry = hold(r, queue, worker)
    jq.finish(r, entry, worker, outcome, {"ok": True} if outcome is Outcome.SUCCEEDED else "boom", 0.01)


def wait_until(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.05)


def stream_jobs(r: redis.Redis, stream: str) -> list[tuple[str, str]]:
    """(entry id, job id) of every entry of ``stream``, oldest first."""
    return [(i, f["job"]) for i, f in codec.stream_entries(decode(r.xrange(stream)))]


def queue_key_names(queue: str) -> list[bytes]:
    return [k.encode() for k in queue_keys(KS.queue(queue))]


def test_waiting_jobs_are_refused_with_their_count_and_nothing_changes(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(redis_client, V1, 3)
    submit(redis_client, V1, 1, Priority.HIGH)
    submit(redis_client, V2, 1)
    before = snapshot(redis_client)
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == traffic.REFUSED
    assert "4 job(s) wait in m:v1 (1 high priority)" in err
    assert "--move-to VERSION (versions of m: v2)" in err and "nothing changed" in err
    assert snapshot(redis_client) == before


def test_move_to_then_retire_loses_nothing_and_a_worker_of_the_target_serves_them(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str], worker_pool: WorkerPool
) -> None:
    submit(redis_client, V2, 1)  # v2 has served already
    [done] = submit(redis_client, V1, 1)
    run_one(redis_client, V1, "old-worker")  # a completion on v1, to be deleted with it
    normal = submit(redis_client, V1, 4)
    high = submit(redis_client, V1, 2, Priority.HIGH)
    cancelled = normal.pop()
    assert jq.cancel_job(redis_client, cancelled) is JobStatus.CANCELLED

    code, out, err = cli(capsys, "m", "v1", "--move-to", "v2", "--settle", "0")
    assert code == 0, err
    assert "move 5 waiting job(s) to m:v2 (no live worker yet)" in out
    assert "retired m:v1: moved 5 job(s), deleted 1 dead entry(ies)" in out
    assert redis_client.exists(*queue_key_names(V1)) == 0
    assert not redis_client.sismember(KS.queues, V1) and redis_client.sismember(KS.queues, V2)
    assert jq.read_queue_counts(redis_client, V2).waiting == 6  # its own job and the five moved

    worker = worker_pool.spawn("v2-worker", QUEUE=V2, MODEL_PREDICT_SECONDS="0.01")
    moved = [*high, *normal]

    def finished() -> bool:
        return all((j := jq.get_job(redis_client, i)) is not None and j.status.terminal for i in moved)

    wait_until(finished)
    for job_id in moved:
        job = jq.get_job(redis_client, job_id)
        assert job is not None
        assert (job.status, job.queue, job.version, job.worker, job.attempts) == (
            JobStatus.SUCCEEDED, V2, "v2", worker.name, 1,
        )  # fmt: skip
    first = jq.get_job(redis_client, done)
    assert first is not None and (first.queue, first.worker) == (V1, "old-worker")  # its record is kept
    still = jq.get_job(redis_client, cancelled)
    assert still is not None and still.status is JobStatus.CANCELLED
    assert redis_client.exists(*queue_key_names(V1)) == 0  # nothing of v1 came back


def populate(r: redis.Redis) -> list[str]:
    """A retired-looking v1: finished jobs (completions), a dead letter, keyed submissions, a worker
    that left; v2 serves. Returns the ids of v1's jobs."""
    ids = [jq.submit_job(r, V1, i, idempotency_key=f"k{i}").job_id for i in range(3)]
    run_one(r, V1, "w1")
    run_one(r, V1, "w1", Outcome.FAILED)
    quick = Settings(max_attempts=1)
    [entry] = jq.fetch(r, V1, "w1", block_ms=50)
    assert jq.start(r, entry, "w1", settings=quick).job is not None
    assert jq.finish(r, entry, "w1", Outcome.ERROR, "boom", 0.01, settings=quick) is JobStatus.DEAD
    info = WorkerInfo("w1", V1, WorkerState.IDLE, started_at=time.time(), heartbeat_at=time.time())
    jq.heartbeat(r, info)
    jq.deregister(r, "w1", V1)
    r.zadd(KS.queue(V1).workers, {"crashed": 1.0})  # a worker that died without deregistering
    submit(r, V2, 1)
    return ids


def test_dry_run_prints_the_plan_and_changes_nothing(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(redis_client)
    submit(redis_client, V1, 2)
    before = snapshot(redis_client)
    code, out, err = cli(capsys, "m", "v1", "--move-to", "v2", "--dead-letters", "delete", "--dry-run")
    assert code == 0, err
    assert out.startswith("dry run, nothing changes: retire m:v1\n")
    for line in (
        "m:v1: 2 job(s) waiting (0 high priority), 0 in flight, 0 live worker(s), 5 arrival(s) counted, "
        "3 completion(s) recorded",
        "move 2 waiting job(s) to m:v2",
        "dead letters: 1 (delete them)",
        "delete the queue's keys (stream:high, stream, arrivals, completions, workers, dead)",
        "remove m:v1 from jq:queues and jq:keyed:m",
        "note: idempotency keys used on m:v1 may live until",
    ):
        assert line in out
    assert snapshot(redis_client) == before
    # Without a decision on the dead letters a dry run says it would refuse, and exits so.
    code, _, err = cli(capsys, "m", "v1", "--move-to", "v2", "--dry-run")
    assert code == traffic.REFUSED and "holds 1 dead letter(s)" in err and "XREVRANGE jq:q:m:v1:dead" in err
    assert snapshot(redis_client) == before


def test_retire_deletes_every_key_of_the_queue_and_keeps_job_records(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = populate(redis_client)
    assert redis_client.zscore(KS.keyed_queues("m"), V1) is not None
    code, out, err = cli(capsys, "m", "v1", "--dead-letters", "delete", "--settle", "0")
    assert code == 0, err
    assert (
        out.splitlines()[-1] == "retired m:v1: moved 0 job(s), deleted 0 dead entry(ies) and the queue's keys"
    )
    assert redis_client.exists(*queue_key_names(V1)) == 0
    assert not redis_client.sismember(KS.queues, V1)
    assert redis_client.zscore(KS.keyed_queues("m"), V1) is None
    assert redis_client.zscore(KS.keyed_queues("m"), "") is not None  # the index itself stays
    # Left to expire by themselves: job records, idempotency records.
    for job_id in ids:
        assert redis_client.exists(KS.job(job_id)) and redis_client.ttl(KS.job(job_id)) > 0
    assert redis_client.ttl(KS.queue(V1).idempotency("k0")) > 0
    left = {k.decode() for k in redis_client.scan_iter(match="jq:q:m:v1:*")}
    assert left == {KS.queue(V1).idempotency(f"k{i}") for i in range(3)}
    # A retry of a keyed request is not sent to the retired queue (that would recreate it).
    holder = bind_sync(idempotency_holder)(redis_client, "m", [V2], "k0")
    assert holder is None
    code, _, err = cli(capsys, "m", "v1", "--dry-run")  # run again: nothing is left
    assert code == 2 and "m:v1 has no queue under prefix 'jq': versions of m there are v2" in err


def test_dead_letters_kept_expire_in_a_month(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(redis_client)
    code, out, err = cli(capsys, "m", "v1", "--dead-letters", "keep", "--settle", "0")
    assert code == 0, err
    assert "1 dead letter(s) kept 30 days" in out
    dead = KS.queue(V1).dead
    assert redis_client.xlen(dead) == 1
    assert DEAD_LETTER_KEEP_SECONDS - 60 < redis_client.ttl(dead) <= DEAD_LETTER_KEEP_SECONDS
    assert redis_client.exists(*[k for k in queue_key_names(V1) if k != dead.encode()]) == 0


def test_the_last_version_of_a_model_takes_its_keyed_index_with_it(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    jq.submit_job(redis_client, "solo:v1", 1, idempotency_key="k")
    run_one(redis_client, "solo:v1", "w1")
    assert redis_client.exists(KS.keyed_queues("solo"))
    code, _, err = cli(capsys, "solo", "v1", "--settle", "0")
    assert code == 0, err
    assert not redis_client.exists(KS.keyed_queues("solo")) and redis_client.smembers(KS.queues) == set()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["m", "v9"], "m:v9 has no queue under prefix 'jq': versions of m there are v1, v2"),
        (["nope", "v1"], "model 'nope' has no queue under prefix 'jq': check the model name"),
        (["m", "v1", "--move-to", "v9"], "--move-to v9: m:v9 was never submitted to"),
    ],
)
def test_unknown_versions_are_named_with_the_known_ones(
    redis_client: redis.Redis,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    submit(redis_client, V2, 1)
    submit(redis_client, V1, 1)
    run_one(redis_client, V1, "w")
    before = snapshot(redis_client)
    code, _, err = cli(capsys, *argv, "--settle", "0")
    assert code in (2, traffic.REFUSED) and message in err, err
    assert snapshot(redis_client) == before


def test_a_version_in_the_live_split_or_the_apis_config_is_refused(
    redis_client: redis.Redis,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submit(redis_client, V1, 1)
    run_one(redis_client, V1, "w")
    submit(redis_client, V2, 1)
    bind_sync(set_traffic)(redis_client, "m", {"v1": 0, "v2": 100})
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == traffic.REFUSED
    assert "m:v1 is in the live traffic split with weight 0 (addressable by name)" in err
    assert "python -m api.traffic set m v2=100" in err
    bind_sync(set_traffic)(redis_client, "m", {"v2": 100})
    monkeypatch.setenv("MODEL_REF", V1)
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == traffic.REFUSED and "m:v1 is the API's MODEL_REF" in err
    monkeypatch.setenv("MODEL_REF", "m")
    monkeypatch.setenv("TRAFFIC_WEIGHTS", "m:v1=0,m:v2=100")
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == traffic.REFUSED and "m:v1 is in the API's TRAFFIC_WEIGHTS" in err
    assert redis_client.sismember(KS.queues, V1)
    monkeypatch.setenv("TRAFFIC_WEIGHTS", "m:v2=100")
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == 0, err


def test_jobs_in_flight_are_waited_for_and_live_workers_refused(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(redis_client, V1, 1)
    entry = hold(redis_client, V1, "w1")
    info = WorkerInfo("w1", V1, WorkerState.BUSY, started_at=time.time(), heartbeat_at=time.time(), job="x")
    jq.heartbeat(redis_client, info)
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == traffic.REFUSED
    assert "1 job(s) in flight in m:v1, held by w1 (1): wait for them to finish" in err
    assert "1 worker(s) of m:v1 are alive (w1)" in err and "Scale their Deployment to 0" in err

    def drain() -> None:  # the worker finishes its job and stops, as on SIGTERM
        time.sleep(0.5)
        jq.finish(redis_client, entry, "w1", Outcome.SUCCEEDED, 1, 0.5)
        jq.deregister(redis_client, "w1", V1)

    thread = threading.Thread(target=drain)
    thread.start()
    code, out, err = cli(capsys, "m", "v1", "--wait", "20", "--settle", "0")
    thread.join()
    assert code == 0, err
    assert "waiting up to" in out and "retired m:v1" in out
    assert redis_client.exists(*queue_key_names(V1)) == 0


def test_a_holder_that_is_gone_is_named_and_the_wait_ends_refused(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(redis_client, V1, 1)
    hold(redis_client, V1, "dead-pod")  # and the pod is killed
    code, _, err = cli(capsys, "m", "v1", "--wait", "1.5", "--settle", "0")
    assert code == traffic.REFUSED
    assert "held by dead-pod (1, not alive)" in err and "VISIBILITY_TIMEOUT" in err
    assert redis_client.sismember(KS.queues, V1) and jq.read_queue_counts(redis_client, V1).in_flight == 1


def test_a_job_that_arrives_during_the_settle_time_stops_the_retire(redis_client: redis.Redis) -> None:
    """Something still routes to the version (an API replica whose split is not refreshed yet): its
    job is moved like the others, and the queue is not deleted under the next one."""
    submit(redis_client, V2, 1)
    submit(redis_client, V1, 2)
    late: list[str] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # the settle time, during which a job comes in
        now[0] += seconds
        late.extend(submit(redis_client, V1, 1))

    out, err = io.StringIO(), io.StringIO()
    pacing = Pacing(settle=5, clock=lambda: now[0], sleep=sleep)
    options = RetireOptions(move_to="v2")
    done = retire_version(
        redis_client, "m", "v1", options, settings=Settings(), pacing=pacing, out=out, err=err
    )
    assert not done and late
    assert "the arrivals counter of m:v1 moved from 2 to 3 during the retire" in err.getvalue()
    assert "moved 3 job(s) to m:v2" in err.getvalue()
    assert redis_client.sismember(KS.queues, V1)
    assert jq.read_queue_counts(redis_client, V2).waiting == 4  # nothing lost, everything served by v2


def test_unreachable_redis_is_one_error_line_and_exit_1(
    cli_env: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobqueue.server import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    code, out, err = cli(capsys, "m", "v1", "--dry-run")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:") and "s3cret" not in err


def test_the_autoscaler_source_and_the_api_backlog_read_a_retired_queue_as_empty(
    redis_client: redis.Redis, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both are configured with queue names, not discovered from the queues set: a target left
    pointing at a retired version reads zeros (no error), and its counter's fall reads as no arrivals."""
    submit(redis_client, V2, 1)
    submit(redis_client, V1, 3)
    for _ in range(3):
        run_one(redis_client, V1, "w")
    source = StreamSource(redis_client, V1)
    before = source.read()
    assert (before.arrivals_total, before.completions) == (3, 3)
    code, _, err = cli(capsys, "m", "v1", "--settle", "0")
    assert code == 0, err
    after = source.read()
    assert (after.waiting, after.in_flight, after.arrivals_total, after.completions) == (0, 0, 0, 0)
    assert after.busy_by_worker == {}
    from autoscaler.arrivals import arrivals_between

    assert arrivals_between(before, after) == 0
    assert source.pulse().waiting == 0
    assert bind_sync(read_backlog)(redis_client, [V1, V2]) == {V1: Backlog(0, 0), V2: Backlog(1, 0)}
    assert redis_client.exists(*queue_key_names(V1)) == 0  # reading recreated nothing


KINDS = ("queued", "cancelled", "missing", "stale")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(st.tuples(st.sampled_from(KINDS), st.booleans()), max_size=14),
    held=st.integers(0, 4),
    batch=st.integers(1, 5),
)
def test_a_sweep_moves_each_runnable_job_exactly_once_and_touches_nothing_else(
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    entries: list[tuple[str, bool]],
    held: int,
    batch: int,
) -> None:
    """Whatever mix of entries a queue holds (queued, cancelled, vanished or stale jobs, either
    priority, some held by a consumer), paged in any batch size: every job a worker would run is
    in the target once, in the stream of its priority, its record pointing at that entry; held
    entries and the other records are left as they were; a second sweep finds nothing to do."""
    redis_client.flushall()
    monkeypatch.setattr(retire_ops, "SWEEP_BATCH", batch)
    submit(redis_client, V2, 1)
    kinds: dict[str, str] = {}
    for kind, urgent in entries:
        [job_id] = submit(redis_client, V1, 1, Priority.HIGH if urgent else Priority.NORMAL)
        kinds[job_id] = kind
        if kind == "cancelled":
            jq.cancel_job(redis_client, job_id)
        elif kind == "missing":
            redis_client.delete(KS.job(job_id))
        elif kind == "stale":
            redis_client.hset(KS.job(job_id), "entry", "1-1")
    taken = [e for _ in range(held) for e in jq.fetch(redis_client, V1, "holder", block_ms=1)]
    taken_ids = {e.job_id for e in taken}
    before = {i: redis_client.hgetall(KS.job(i)) for i in kinds}

    high, normal = sweep(redis_client, V1, V2)

    runnable = {i for i, k in kinds.items() if k == "queued" and i not in taken_ids}
    assert (high + normal).runnable == len(runnable)
    assert (high + normal).held == len(taken)
    assert (high + normal).dropped == sum(1 for i, k in kinds.items() if k != "queued" and i not in taken_ids)
    q1, q2 = KS.queue(V1), KS.queue(V2)
    assert redis_client.xlen(q1.stream) + redis_client.xlen(q1.high_stream) == len(taken)
    in_target = {
        job: (stream, entry) for stream in q2.streams for entry, job in stream_jobs(redis_client, stream)
    }
    assert {i for i in in_target if i in kinds} == runnable
    for job_id in runnable:
        job = jq.get_job(redis_client, job_id)
        stream, entry_id = in_target[job_id]
        assert job is not None and (job.queue, job.version, job.status) == (V2, "v2", JobStatus.QUEUED)
        assert stream == (q2.high_stream if job.priority is Priority.HIGH else q2.stream)
        assert redis_client.hget(KS.job(job_id), "entry") == entry_id.encode()
    for job_id in set(kinds) - runnable:
        assert redis_client.hgetall(KS.job(job_id)) == before[job_id]
    again_high, again_normal = sweep(redis_client, V1, V2)
    assert again_high + again_normal == retire_ops.Sweep(held=len(taken))
    # A worker of v2 runs every moved job once.
    ran = []
    while got := jq.fetch(redis_client, V2, "v2-worker", block_ms=1):
        for entry in got:
            started = jq.start(redis_client, entry, "v2-worker")
            if started.job is not None:
                ran.append(started.job.id)
    assert sorted(i for i in ran if i in kinds) == sorted(runnable)


def test_a_move_racing_a_worker_and_submissions_runs_every_job_exactly_once(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of v1 takes jobs and a submitter adds them while sweeps move the rest to v2 in small
    batches: every job ends succeeded, on one version, with one completion."""
    monkeypatch.setattr(retire_ops, "SWEEP_BATCH", 3)
    submitted: list[str] = []
    stop_submitting, stop_working = threading.Event(), threading.Event()

    def submitter() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop_submitting.is_set():
            submitted.extend(
                submit(client, V1, 1, Priority.HIGH if len(submitted) % 3 == 0 else Priority.NORMAL)
            )
        client.close()

    def worker(queue: str, name: str, stop: threading.Event) -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            for entry in jq.fetch(client, queue, name, block_ms=5):
                if jq.start(client, entry, name).job is not None:
                    jq.finish(client, entry, name, Outcome.SUCCEEDED, 1, 0.001)
        client.close()

    threads = [
        threading.Thread(target=submitter),
        threading.Thread(target=worker, args=(V1, "v1-worker", stop_working)),
    ]
    for t in threads:
        t.start()
    moved = retire_ops.Sweep()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        high, normal = sweep(redis_client, V1, V2)
        moved = moved + high + normal
    stop_submitting.set()
    threads[0].join()
    wait_until(lambda: jq.read_queue_counts(redis_client, V1).in_flight == 0)
    stop_working.set()
    threads[1].join()
    high, normal = sweep(redis_client, V1, V2)
    moved = moved + high + normal
    assert moved.runnable > 0 and len(submitted) > moved.runnable  # both versions served some
    done = threading.Event()
    drain = threading.Thread(target=worker, args=(V2, "v2-worker", done))
    drain.start()
    wait_until(lambda: jq.read_queue_counts(redis_client, V2).waiting == 0)
    done.set()
    drain.join()
    completions = [job for q in (V1, V2) for _, job in stream_jobs(redis_client, KS.queue(q).completions)]
    assert sorted(completions) == sorted(submitted)  # each job ran once, none was lost
    for job_id in submitted:
        job = jq.get_job(redis_client, job_id)
        assert job is not None and job.status is JobStatus.SUCCEEDED


def test_an_interrupted_move_is_finished_by_running_the_retire_again(
    redis_client: redis.Redis,
    redis_url: str,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A move whose connection died between two batches left some jobs moved and the rest where they
    were, each whole; the next run moves the rest and retires."""
    monkeypatch.setattr(retire_ops, "SWEEP_BATCH", 2)
    submit(redis_client, V2, 1)
    ids = submit(redis_client, V1, 7)
    flaky = redis.Redis.from_url(redis_url)
    real, trips = flaky.pipeline, [0]

    def pipeline(*args: object, **kwargs: object) -> object:
        trips[0] += 1
        if trips[0] > 3:  # read high, read normal, move one batch: then the connection is lost
            raise redis.ConnectionError("connection lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(flaky, "pipeline", pipeline)
    with pytest.raises(redis.ConnectionError):
        sweep(flaky, V1, V2)
    flaky.close()
    assert jq.read_queue_counts(redis_client, V1).waiting == len(ids) - 2
    assert jq.read_queue_counts(redis_client, V2).waiting == 3
    code, out, err = cli(capsys, "m", "v1", "--move-to", "v2", "--settle", "0")
    assert code == 0, err
    assert f"move {len(ids) - 2} waiting job(s) to m:v2" in out
    assert jq.read_queue_counts(redis_client, V2).waiting == len(ids) + 1
    for job_id in ids:
        job = jq.get_job(redis_client, job_id)
        assert job is not None and job.queue == V2


def test_the_retire_works_under_the_deployments_key_prefix_and_only_there(
    redis_client: redis.Redis,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = Settings(prefix="tenant1")
    for s in (tenant, Settings()):
        jq.submit_job(redis_client, V1, 1, settings=s)
        jq.submit_job(redis_client, V2, 1, settings=s)
    monkeypatch.setenv("KEY_PREFIX", "tenant1")
    code, out, err = cli(capsys, "m", "v1", "--move-to", "v2", "--settle", "0")
    assert code == 0, err
    assert "remove m:v1 from tenant1:queues and tenant1:keyed:m" in out
    assert redis_client.exists(*[k.replace(b"jq:", b"tenant1:", 1) for k in queue_key_names(V1)]) == 0
    assert jq.read_queue_counts(redis_client, V2, settings=tenant).waiting == 2
    assert jq.read_queue_counts(redis_client, V1).waiting == 1  # the default prefix's queue is another one
