"""Asyncio flavour: every protocol operation as ``await name(redis.asyncio.Redis, ...)``.

Used by the FastAPI job API. The functions are the operations of :mod:`jobqueue.ops` and
:mod:`jobqueue.consumer` bound by :func:`jobqueue.binding.bind_async`; see those modules.
"""

from __future__ import annotations

from jobqueue import consumer, ops
from jobqueue.binding import bind_async

submit_job = bind_async(ops.submit_job)
get_job = bind_async(ops.get_job)
cancel_job = bind_async(ops.cancel_job)
wait_for_job = bind_async(ops.wait_for_job)
read_queue_counts = bind_async(ops.read_queue_counts)
read_queue_stats = bind_async(ops.read_queue_stats)
read_completions = bind_async(ops.read_completions)
read_list_queue_stats = bind_async(ops.read_list_queue_stats)
list_queues = bind_async(ops.list_queues)
read_dead_letters = bind_async(ops.read_dead_letters)
ensure_groups = bind_async(consumer.ensure_groups)
fetch = bind_async(consumer.fetch)
reclaim = bind_async(consumer.reclaim)
own_pending = bind_async(consumer.own_pending)
start = bind_async(consumer.start)
finish = bind_async(consumer.finish)
heartbeat = bind_async(consumer.heartbeat)
deregister = bind_async(consumer.deregister)
forget_idle_consumers = bind_async(consumer.forget_idle_consumers)
