"""The job loop: set up the model, then take, run and finish jobs until asked to drain.

Threads: this loop (main thread, the only one calling the model), the heartbeat, the job watchdog,
the probe server. Signals: SIGTERM/SIGINT request a drain: no new job is taken, the current one is
finished and recorded, the worker deregisters and the process exits 0. Redis outages are waited out
with back-off; a job's result is kept in memory and recorded once Redis is back, and if the worker
dies meanwhile the job's entry is still pending and another worker reclaims it. A model call that
outlives JOB_TIMEOUT (draining or not) is recorded as a timed-out attempt and the process exits
with :data:`worker.watchdog.EXIT_JOB_TIMEOUT` (see :mod:`worker.watchdog`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from jobqueue import Entry, JobStatus, MalformedJobError, codec, consumer
from jobqueue import sync as jq
from jobqueue.binding import bind_sync
from jobqueue.consumer import Discarded, EncodedOutput, Outcome, ReclaimCursor
from jobqueue.errors import describe, misconfigured, remedy
from worker.config import WorkerConfig
from worker.contact import RedisContact
from worker.heartbeat import Heartbeat
from worker.metrics import WorkerMetrics
from worker.model import Model, PermanentJobError
from worker.probes import start_probe_server
from worker.retry import GaveUp, with_retry
from worker.status import LiveStatus
from worker.watchdog import EXIT_JOB_TIMEOUT, JobWatchdog

T = TypeVar("T")
log = logging.getLogger(__name__)
finish_attempt = bind_sync(consumer.finish_attempt)  # jq.finish, saying why a result was discarded

EXIT_MISCONFIGURED = 2
"""Exit status when Redis refuses the worker's configuration (its credentials, the database REDIS_URL
names: :func:`jobqueue.errors.misconfigured`) or PORT cannot be listened on, as for a bad setting
(see __main__)."""


class SetupAborted(BaseException):  # a control-flow signal, not an error
    """Raised from the signal handler to interrupt the model's setup.

    A BaseException, like KeyboardInterrupt: a model whose setup retries on ``except Exception``
    (a flaky weights download, say) would otherwise swallow it and warm up in full before exiting,
    burning the pod's grace period on a pod that was released."""


def connect(config: WorkerConfig) -> redis.Redis:
    """A client whose socket timeout outlasts a blocking read, and with little built-in retrying:
    outages are handled by :func:`worker.retry.with_retry`, which knows when to give up.

    A malformed URL is reported naming REDIS_URL (never its value, which may hold a password)."""
    try:
        return redis.Redis.from_url(
            config.redis_url,
            socket_timeout=config.poll_seconds + 10,
            socket_connect_timeout=3,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1),
        )
    except ValueError as exc:
        raise ValueError(f"REDIS_URL is not a usable Redis URL: {exc}") from None


class Worker:
    def __init__(self, config: WorkerConfig, model: Model, client: redis.Redis | None = None) -> None:
        self.config = config
        self.model = model
        self.client = client or connect(config)
        self.status = LiveStatus(config.name, config.queue)
        self.metrics = WorkerMetrics(config.queue)
        self.metrics.state.labels(config.queue).state(self.status.state.value)
        self.draining = threading.Event()
        # Fed by the Redis calls of the job loop and of the heartbeat thread; decides whether an
        # outage postpones the reclaim (see _next_entries and worker.contact).
        self._contact = RedisContact(config.visibility_timeout, config.heartbeat_seconds)
        self.heartbeat = Heartbeat(
            self.client,
            self.status,
            self.metrics,
            config.heartbeat_seconds,
            config.settings,
            on_redis_error=self._contact.failed,
            on_redis_reached=self._contact.reached,
        )
        self.watchdog = JobWatchdog(self.status, config.job_timeout, self._abandon_hung_job)
        self._reclaim_every = min(config.visibility_timeout / 4, 5.0)
        self._next_reclaim = 0.0
        # Kept across calls so each reclaim continues where the last one stopped (XAUTOCLAIM looks
        # at a bounded number of pending entries per call; see jobqueue.consumer.ReclaimCursor).
        self._reclaim_cursor = ReclaimCursor()
        self._next_forget = time.monotonic() + config.forget_consumers_after
        self._in_setup = False

    def request_drain(self, signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        """Signal handler. During setup it aborts the setup: a pod released while warming up holds
        no job, so waiting for the warm-up to end would only burn the grace period."""
        if self._in_setup:
            self._in_setup = False
            self.status.drain()
            self.draining.set()
            raise SetupAborted(signal.Signals(signum).name)
        if not self.draining.is_set():
            log.info(
                "received %s: draining (finishing the current job, taking no new one)",
                signal.Signals(signum).name,
            )
        self.status.drain()
        self.draining.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_drain)
        signal.signal(signal.SIGINT, self.request_drain)

    def run(self) -> int:
        """Serve until drained; returns the process exit code."""
        try:
            probes = start_probe_server(self.status, self.metrics, self.config.port)
        except OSError as exc:  # taken, or privileged: a setting to fix, like an invalid PORT
            log.critical(
                "configuration error: PORT=%d cannot be listened on (%s); exiting with status %d",
                self.config.port,
                exc.strerror or exc,
                EXIT_MISCONFIGURED,
            )
            return EXIT_MISCONFIGURED
        try:
            self._check_redis()
        except redis.RedisError as exc:  # a misconfiguration: nothing has started yet
            probes.shutdown()
            return self._refused(exc)
        self.heartbeat.start()
        self.watchdog.start()
        try:
            self._setup()
            if not self.draining.is_set():
                self._redis(
                    lambda: jq.ensure_groups(self.client, self.config.queue, settings=self.config.settings),
                    "creating consumer groups",
                )
                self._loop()
        except SetupAborted as why:
            log.info("received %s during setup: exiting without serving", why)
        except GaveUp as what:
            log.warning("drained while redis was unavailable (during %s)", what)
        except redis.RedisError as exc:
            if not misconfigured(exc):
                raise
            return self._refused(exc)
        finally:
            self.watchdog.stop()
            self._leave()
            probes.shutdown()
        log.info("stopped")
        return 0

    def _check_redis(self) -> None:
        """One PING before the model's setup: a server that refuses this worker's configuration (a
        wrong password, a database it lacks: :func:`jobqueue.errors.misconfigured`) is raised now,
        before the warm-up is paid, where it was met after it (and each restart paid it again).

        A server that is down or unreachable is not waited for here: the setup goes ahead, the
        heartbeat reports the outage, and the job loop waits it out as before. This costs at most
        the client's connect timeout (3 s, tried twice) on a server that does not answer at all."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            if misconfigured(exc):
                raise
            log.warning("redis unavailable at start (%s: %s); setting up meanwhile", type(exc).__name__, exc)

    def _refused(self, exc: redis.RedisError) -> int:
        """Not an outage to wait out (retried as one, a wrong password was retried forever, quietly):
        the process exits, one line saying what to check, and its restarts show until an operator
        fixes REDIS_URL or the server."""
        log.critical("redis %s; %s; exiting with status %d", describe(exc), remedy(exc), EXIT_MISCONFIGURED)
        return EXIT_MISCONFIGURED

    def _setup(self) -> None:
        log.info("setting up model %s", self.config.model_class)
        self._in_setup = True
        try:
            self.model.setup()
        finally:
            self._in_setup = False
        warmup = self.status.mark_ready()
        self.metrics.warmup.labels(self.config.queue).set(warmup)
        self.heartbeat.beat()  # publish "idle" and ready_at now, not up to a heartbeat later
        log.info("ready after %.2f s warm-up; serving queue %s", warmup, self.config.queue)

    def _redis(self, fn: Callable[[], T], what: str, *, until_drained: bool = True) -> T:
        """Retry ``fn`` through Redis outages; with ``until_drained`` give up once draining."""

        def reaching() -> T:
            result = fn()
            self._contact.reached()
            return result

        return with_retry(
            reaching,
            what=what,
            wake=self.draining if until_drained else None,
            give_up=self.draining.is_set if until_drained else lambda: False,
            on_error=self._redis_failed,
        )

    def _redis_failed(self) -> None:
        self.metrics.redis_errors.labels(self.config.queue).inc()
        self._contact.failed()

    def _loop(self) -> None:
        while not self.draining.is_set():
            for entry in self._redis(self._next_entries, "fetching jobs"):
                self._process(entry)  # even when draining: these entries are already ours

    def _next_entries(self) -> list[Entry]:
        now = time.monotonic()
        cfg = self.config
        # Every entry this loop took has been run by now, so any still pending under our name is
        # an orphan (a read whose reply was lost, a predecessor under our name): run it at once
        # rather than a visibility timeout later, when a reclaim would find it.
        orphans = jq.own_pending(self.client, cfg.queue, cfg.name, settings=cfg.settings)
        # Redis answers now: a blackout in progress ends here, before the reclaim is decided on.
        self._contact.reached()
        if orphans:
            log.info("running job(s) %s delivered to this worker earlier", [e.job_id for e in orphans])
            return orphans
        # After an outage long enough to have kept live holders from renewing their leases, the
        # reclaim waits a visibility timeout from its end (their jobs would look abandoned until
        # their heartbeats return). Failed calls between successful ones, however often they
        # recur (a heartbeat failing at every beat), postpone nothing: see worker.contact.
        if now >= self._next_reclaim and self._contact.may_reclaim():
            self._next_reclaim = now + self._reclaim_every
            entry = jq.reclaim(
                self.client,
                cfg.queue,
                cfg.name,
                int(cfg.visibility_timeout * 1000),
                cursor=self._reclaim_cursor,
                settings=cfg.settings,
            )
            if entry is not None:
                log.info("reclaimed job %s from a worker that stopped heartbeating", entry.job_id)
                return [entry]
        if now >= self._next_forget:
            self._next_forget = now + cfg.forget_consumers_after
            jq.forget_idle_consumers(
                self.client, cfg.queue, int(cfg.forget_consumers_after * 1000), settings=cfg.settings
            )
        return jq.fetch(
            self.client, cfg.queue, cfg.name, block_ms=int(cfg.poll_seconds * 1000), settings=cfg.settings
        )

    def _process(self, entry: Entry) -> None:
        cfg = self.config
        # One token per delivery, reused by every retry of this start: a retry after a lost reply
        # then gets the attempt it began back instead of counting another (see jobqueue.consumer.start).
        token = uuid.uuid4().hex
        t0 = time.monotonic()
        try:
            started = self._redis(
                lambda: jq.start(self.client, entry, cfg.name, token=token, settings=cfg.settings),
                "starting a job",
            )
        except GaveUp:
            return  # still pending under our name: reclaimed by another worker later
        except MalformedJobError as exc:
            self._fail_malformed(entry, exc, time.monotonic() - t0, token)
            return
        if started.job is None:
            self.metrics.skipped.labels(cfg.queue, started.skipped).inc()
            log.info("skipped job %s (%s)", entry.job_id, started.skipped)
            return
        self.status.busy(entry)
        log.info("running job %s (attempt %d)", entry.job_id, started.job.attempts)
        t0 = time.monotonic()
        outcome, payload = self._predict(started.job.input)
        duration = time.monotonic() - t0
        if not self.status.returned():
            # Too late: the watchdog gave this attempt up as timed out, records it so and ends the
            # process; recording this result too would race it. Wait for the end.
            threading.Event().wait()
        status = self._redis(
            lambda: finish_attempt(
                self.client, entry, cfg.name, outcome, payload, duration, token=token, settings=cfg.settings
            ),
            "recording a result",
            until_drained=False,  # a finished job is recorded even while draining
        )
        self.status.idle()
        self.metrics.finished(status, duration, raised=outcome is not Outcome.SUCCEEDED)
        log.info("job %s -> %s in %.3f s", entry.job_id, recorded(status), duration)

    def _fail_malformed(self, entry: Entry, error: MalformedJobError, elapsed: float, token: str) -> None:
        """Fail a started job whose record does not decode, and go on serving.

        Why not let the error escape: it ended the job loop and the process. The restarted pod paid
        its warm-up again, and the entry, reclaimed after the visibility timeout, crashed the next
        worker the same way, until its attempts ran out. The same record decodes the same way on
        every delivery, so the attempt is failed for good (``Outcome.FAILED``, the protocol's
        permanent failure, as for a :class:`PermanentJobError`), with the field named in the job's
        error. Given up when draining in an outage: the entry is then reclaimed and failed by the
        next worker to start it.
        """
        cfg = self.config
        text = f"malformed job record: {error}"
        log.error("job %s: %s; failed without running the model", entry.job_id, text)
        status = self._redis(
            lambda: finish_attempt(
                self.client,
                entry,
                cfg.name,
                Outcome.FAILED,
                text,
                elapsed,
                token=token,
                settings=cfg.settings,
            ),
            "failing a malformed job",
        )
        self.metrics.malformed.labels(cfg.queue).inc()
        self.metrics.jobs.labels(cfg.queue, status.value).inc()

    def _abandon_hung_job(self, entry: Entry, elapsed: float) -> None:
        """Watchdog callback (its thread; the main thread is stuck in the model): record the attempt
        as a retryable timeout, deregister, and end the process with EXIT_JOB_TIMEOUT. Never returns.

        Recording is retried through a Redis outage for up to a visibility timeout; if it still
        fails, the entry, no longer renewed, is reclaimed by another worker after the visibility
        timeout, which counts the attempt as lost instead, so the job is not stranded either way.
        """
        cfg = self.config
        try:
            log.error(
                "job %s: the model call has not returned after %.1f s (JOB_TIMEOUT=%g s); recording "
                "the attempt as timed out and exiting so the container is restarted",
                entry.job_id,
                elapsed,
                cfg.job_timeout,
            )
            error = (
                f"timed out after {cfg.job_timeout:g} s (JOB_TIMEOUT): the model call did not return; "
                f"worker {cfg.name} exited to be restarted"
            )
            deadline = time.monotonic() + cfg.visibility_timeout
            status = with_retry(
                lambda: finish_attempt(
                    self.client, entry, cfg.name, Outcome.ERROR, error, elapsed, settings=cfg.settings
                ),
                what="recording a timed-out job",
                give_up=lambda: time.monotonic() > deadline,
                on_error=self._redis_failed,
            )
            log.error("job %s -> %s (timed out)", entry.job_id, recorded(status))
            self._leave()
        except Exception:  # GaveUp included: whatever happened, the process must still end
            log.exception("could not record the timed-out job %s; it is reclaimed later", entry.job_id)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_JOB_TIMEOUT)

    def _predict(self, input: Any) -> tuple[Outcome, Any]:
        """Run the model; a model exception is retryable unless it is a PermanentJobError. A success
        carries its output encoded (:class:`~jobqueue.consumer.EncodedOutput`), so that
        :func:`~jobqueue.consumer.finish` stores the text checked here rather than encoding again."""
        try:
            output = self.model.predict(input)
        except PermanentJobError as exc:
            return Outcome.FAILED, f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.exception("model raised")
            return Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        try:
            return Outcome.SUCCEEDED, EncodedOutput(codec.dumps(output))
        # A model bug: retrying gives the same answer. RecursionError is an output nested deeper than
        # the encoder goes: let through, it ended the process, leaving the job running until it was
        # reclaimed, crashed the next worker, and was dead-lettered as "stopped heartbeating".
        except (TypeError, ValueError, RecursionError) as exc:
            return Outcome.FAILED, f"model output is not JSON-serialisable: {exc}"

    def _leave(self) -> None:
        """Leave the registry for good: no heartbeat may write after the deregistration (see
        :meth:`worker.heartbeat.Heartbeat.retire`)."""
        self.heartbeat.retire(self._deregister)

    def _deregister(self) -> None:
        try:
            jq.deregister(self.client, self.config.name, self.config.queue, settings=self.config.settings)
        except redis.RedisError as exc:
            log.warning("could not deregister (%s); the registry entry expires by itself", exc)


def recorded(status: JobStatus | Discarded) -> str:
    """What became of an attempt's result, for the log: the job's status, or why it was discarded."""
    if status is Discarded.LOST:
        return "discarded (reclaimed by another worker, which holds the job now)"
    if status is Discarded.MISSING:
        return (
            "discarded (the job's record is gone: Redis lost its data, e.g. restarted without "
            "persistence, or the record was deleted)"
        )
    return status.value
