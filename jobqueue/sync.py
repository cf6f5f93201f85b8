"""Blocking flavour: every protocol operation as ``name(redis.Redis, ...) -> result``.

Used by the worker (a plain thread-per-concern process) and by tests and scripts. The functions are
the operations of :mod:`jobqueue.ops` and :mod:`jobqueue.consumer` bound by
:func:`jobqueue.binding.bind_sync`; see those modules for what each does.
"""

from __future__ import annotations

from jobqueue import consumer, ops
from jobqueue.binding import bind_sync

submit_job = bind_sync(ops.submit_job)
get_job = bind_sync(ops.get_job)
cancel_job = bind_sync(ops.cancel_job)
wait_for_job = bind_sync(ops.wait_for_job)
read_queue_counts = bind_sync(ops.read_queue_counts)
read_queue_stats = bind_sync(ops.read_queue_stats)
read_completions = bind_sync(ops.read_completions)
read_list_queue_stats = bind_sync(ops.read_list_queue_stats)
list_queues = bind_sync(ops.list_queues)
read_dead_letters = bind_sync(ops.read_dead_letters)
ensure_groups = bind_sync(consumer.ensure_groups)
fetch = bind_sync(consumer.fetch)
reclaim = bind_sync(consumer.reclaim)
own_pending = bind_sync(consumer.own_pending)
start = bind_sync(consumer.start)
finish = bind_sync(consumer.finish)
heartbeat = bind_sync(consumer.heartbeat)
deregister = bind_sync(consumer.deregister)
forget_idle_consumers = bind_sync(consumer.forget_idle_consumers)
