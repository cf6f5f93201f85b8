"""Queue signals from Redis: the project's own job streams, or a plain list.

Both read through :mod:`jobqueue` (no key is spelled here) in two pipelined round trips per tick,
plus one per further batch of completions when more than a batch finished since the last read (see
:meth:`StreamSource.read`). Any Redis error (connection refused, timeout, a server still loading its
dataset, a key of the wrong type) becomes :class:`SourceUnavailableError`, which makes the loop hold
the replica count: a missing reading must never look like an empty queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from autoscaler.config import ListSourceConfig, StreamSourceConfig
from autoscaler.sources.base import QueueSignals, SourceUnavailableError
from jobqueue import sync as jq
from jobqueue.errors import wrong_database
from jobqueue.ops import CounterKeyError
from jobqueue.types import Completion, QueueStats, Settings, WorkerInfo, WorkerState

Clock = Callable[[], float]
HISTORY_LIMIT = 10_000
"""Completions read at most for a warm start: one XREVRANGE, bounded by the stream's own cap."""
COMPLETIONS_BATCH = 1_000
"""Completions per XRANGE: a busy tick costs a few more round trips, never one huge reply."""
COMPLETIONS_PER_READ = 20_000
"""Completions one read returns at most, so its memory is bounded whatever the backlog.

Twice the stream's default cap (``Settings.completions_maxlen``): a reader further behind than the
stream is long has already lost those entries to trimming, so one read catches up with whatever the
stream still holds. At a 5 s tick it keeps up with 4,000 completions/s; above that the stream's
trimming, not this reader, bounds the lag (the cursor lands on the oldest entry left).
"""


def connect(config: StreamSourceConfig | ListSourceConfig) -> redis.Redis:
    """A client for the source's URL; ``${ENV}`` references and the password env are resolved now."""
    return redis.Redis.from_url(
        config.resolved_url(),
        password=config.password(),
        socket_timeout=config.socket_timeout_seconds,
        socket_connect_timeout=config.socket_timeout_seconds,
        health_check_interval=30,
    )


def unavailable(what: str, client: redis.Redis, exc: redis.RedisError) -> SourceUnavailableError:
    """The error for a failed read, saying what to check: an operator reading "Error 111" in a
    log should not have to know which setting holds the address or the password."""
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    if isinstance(exc, redis.AuthenticationError) or str(exc).startswith(("NOAUTH", "WRONGPASS")):
        hint = "Redis refused the credentials: check the source's password_env (or the URL's password)"
    elif isinstance(exc, redis.BusyLoadingError):  # a ConnectionError to redis-py, yet it answered
        hint = (
            f"Redis at {where} is loading its data into memory (it restarted): the loop holds until "
            "it is done, nothing to change"
        )
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        hint = (
            f"cannot reach Redis at {where}: check the source's redis_url (by default $REDIS_URL) "
            "and that the server is running and reachable from this pod"
        )
    elif wrong_database(exc):
        hint = (
            f"Redis at {where} has no database {kwargs.get('db', 0)}: check the database number "
            "(the URL's path) in the source's redis_url against the server's `databases` setting"
        )
    else:
        hint = f"Redis at {where} refused the read"
    return SourceUnavailableError(f"{what}: {exc} ({hint})")


def _busy_slots(worker: WorkerInfo) -> int:
    """A worker serves one job at a time; a draining one still finishing its job is busy too."""
    return 1 if worker.job and worker.state in (WorkerState.BUSY, WorkerState.DRAINING) else 0


def _arrival(completion: Completion) -> float | None:
    """When the job arrived: its submission time, else its attempt's start, else unknown (None)."""
    if completion.submitted_at is not None:
        return completion.submitted_at
    if completion.duration is not None:
        return completion.finished_at - completion.duration
    return None


@dataclass(frozen=True, slots=True)
class ArrivalHistory:
    """Approximate past arrivals (epoch seconds, oldest first) and the service times seen with them."""

    arrival_times: tuple[float, ...]
    service_times: tuple[float, ...]


class StreamSource:
    """Signals of one ``jobqueue`` queue: exact arrivals counter, completions, worker states.

    ``worker_ttl`` (the source's ``worker_ttl_seconds``) counts a worker only while its last
    heartbeat, by the Redis server's clock, is at most that old; None leaves it to the workers' own
    WORKER_TTL (their registry entry expires), which also bounds it when this is longer.
    """

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        settings: Settings | None = None,
        clock: Clock = time.time,
        *,
        max_completions: int = COMPLETIONS_PER_READ,
        worker_ttl: float | None = None,
    ) -> None:
        self._client = client
        self.queue = queue
        self._settings = settings or Settings()
        self._worker_ttl = worker_ttl
        self._clock = clock
        self._cursor: str | None = None
        self._max_completions = max(COMPLETIONS_BATCH, max_completions)

    @classmethod
    def from_config(cls, config: StreamSourceConfig) -> StreamSource:
        settings = Settings(prefix=config.prefix)
        return cls(connect(config), config.queue, settings, worker_ttl=config.worker_ttl_seconds)

    def read(self) -> QueueSignals:
        """The counts, worker states and every completion since the previous read (up to a bound).

        Completions come in batches of ``COMPLETIONS_BATCH``, read until one comes back short: a
        single batch per tick fell further behind on every tick once more than a batch finished
        per tick (200/s at 5 s), so service times and latencies grew ever older until the stream's
        trimming dropped entries never read. At most ``max_completions`` are returned; the rest
        are the next read's. The cursor moves only once the whole read succeeded, so a read that
        fails halfway loses nothing and counts nothing twice.
        """
        seeding = self._cursor is None
        try:
            stats = jq.read_queue_stats(
                self._client,
                self.queue,
                since=self._cursor,
                limit=COMPLETIONS_BATCH,
                max_heartbeat_age=self._worker_ttl,
                settings=self._settings,
            )
            # Taken at the counter's read: the loop differences arrivals over these timestamps.
            observed_at = self._clock()
            # The first read seeds service times from the newest completions only (no backlog).
            completions, cursor = (
                (stats.completions, stats.completions_cursor) if seeding else self._catch_up(stats)
            )
        except redis.RedisError as exc:
            raise unavailable(f"queue {self.queue}", self._client, exc) from exc
        self._cursor = cursor
        # Completions of the seeding read finished before this process was watching (a previous one
        # already counted them), so they carry no latencies.
        return QueueSignals(
            observed_at=observed_at,
            waiting=stats.waiting,
            in_flight=stats.in_flight,
            arrivals_total=stats.arrivals_total,
            service_times=tuple(c.duration for c in completions if c.duration is not None),
            completions=len(completions),
            busy_by_worker={w.name: _busy_slots(w) for w in stats.workers},
            latencies=() if seeding else tuple(c.latency for c in completions if c.latency is not None),
        )

    def _catch_up(self, first: QueueStats) -> tuple[tuple[Completion, ...], str]:
        """``first``'s completions and the batches after them, until caught up or at the bound."""
        completions, cursor = list(first.completions), first.completions_cursor
        asked = COMPLETIONS_BATCH
        batch: tuple[Completion, ...] = first.completions
        while len(batch) == asked and len(completions) < self._max_completions:
            asked = min(COMPLETIONS_BATCH, self._max_completions - len(completions))
            batch = jq.read_completions(
                self._client, self.queue, since=cursor, limit=asked, settings=self._settings
            )
            if batch:
                completions.extend(batch)
                cursor = batch[-1].stream_id
        return tuple(completions), cursor

    def pulse(self) -> QueueSignals:
        try:
            counts = jq.read_queue_counts(self._client, self.queue, settings=self._settings)
        except redis.RedisError as exc:
            raise unavailable(f"queue {self.queue}", self._client, exc) from exc
        return QueueSignals(
            observed_at=self._clock(),
            waiting=counts.waiting,
            in_flight=counts.in_flight,
            arrivals_total=counts.arrivals_total,
        )

    def history(self, seconds: float) -> ArrivalHistory:
        """Rebuild the last ``seconds`` of arrivals from the completions stream, for a warm restart.

        Acknowledged job entries are deleted from the job stream, so the only durable trace of past
        load is the capped completions stream. Each entry carries its job's submission time, the
        exact arrival; a retried job has one entry per attempt and counts once. Entries written
        before that field existed fall back to the attempt's start (``finished_at - duration``),
        which lags the arrival by the queue wait (an entry with neither tells nothing). Jobs still
        waiting or running are not in the stream yet, so the most recent seconds read low; the
        first ticks' own arrivals make that up. The completion cursor moves past what was read, so
        the first tick does not count these again.
        """
        try:
            stats = jq.read_queue_stats(
                self._client, self.queue, limit=HISTORY_LIMIT, settings=self._settings
            )
        except redis.RedisError as exc:
            raise unavailable(f"queue {self.queue}", self._client, exc) from exc
        self._cursor = stats.completions_cursor
        since = self._clock() - seconds
        arrivals: dict[str, float] = {}
        services: list[float] = []
        for c in stats.completions:
            arrival = _arrival(c)
            if arrival is not None and arrival >= since:
                arrivals.setdefault(c.job_id, arrival)
                if c.duration is not None:
                    services.append(c.duration)
        return ArrivalHistory(arrival_times=tuple(sorted(arrivals.values())), service_times=tuple(services))

    def close(self) -> None:
        self._client.close()


class ListSource:
    """A plain list: waiting = LLEN; arrivals from an optional counter key, else left to the loop.

    The counter holds an integer (INCR, INCRBY; "12.0" too, an integral value written as a float);
    a key of another type or another value is a read that failed, naming ``arrivals_key``.

    Nothing is known about jobs in flight or finished (other systems keep that elsewhere), so
    ``in_flight`` is 0 and no completions are reported; see :mod:`autoscaler.loop` for how arrivals
    are estimated without a counter and the bias that has.
    """

    def __init__(
        self, client: redis.Redis, key: str, arrivals_key: str | None = None, clock: Clock = time.time
    ) -> None:
        self._client = client
        self.key = key
        self.arrivals_key = arrivals_key
        self._clock = clock

    @classmethod
    def from_config(cls, config: ListSourceConfig) -> ListSource:
        return cls(connect(config), config.key, config.arrivals_key)

    def read(self) -> QueueSignals:
        try:
            stats = jq.read_list_queue_stats(self._client, self.key, self.arrivals_key)
        except CounterKeyError as exc:  # the counter, not the list, is wrong: name the setting
            raise SourceUnavailableError(f"arrivals_key {exc.key}: {exc.problem}") from exc
        except redis.RedisError as exc:
            raise unavailable(f"list {self.key}", self._client, exc) from exc
        return QueueSignals(
            observed_at=self._clock(),
            waiting=stats.waiting,
            in_flight=0,
            arrivals_total=stats.arrivals_total,
        )

    def pulse(self) -> QueueSignals:
        """The same two reads as :meth:`read`: a list has nothing more to skip."""
        return self.read()

    def close(self) -> None:
        self._client.close()


def make_source(config: StreamSourceConfig | ListSourceConfig) -> StreamSource | ListSource:
    """The source a target's config names."""
    if isinstance(config, StreamSourceConfig):
        return StreamSource.from_config(config)
    return ListSource.from_config(config)
