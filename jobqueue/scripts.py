"""Server-side Lua for the state transitions that must be atomic.

Why Lua and not MULTI: each transition reads the job record and decides (is it still queued? is
this worker still its holder? are attempts exhausted?) before writing, and the write spans the job
hash and one or more streams. A script does the read and the writes in one round trip with no
window in which another worker or the API can interleave, and without WATCH retry loops.

Each script is defined once here, identified by its SHA-1, and sent with EVALSHA by the driver,
which loads it on NOSCRIPT (e.g. after a server restart emptied the script cache).

Conventions: KEYS are declared (so the scripts stay correct under ACLs and key-space tooling);
timestamps are epoch seconds passed in by the caller (one clock per party, no TIME calls), except
the queue's worker set, stamped and judged by the server's clock alone (INDEX_WORKER, LIVE_WORKERS);
a missing optional value is the empty string.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA-1 (what EVALSHA needs)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


SUBMIT = Script(
    "submit",
    """
-- KEYS: job hash, stream, arrivals counter, queues set, [idempotency record, [the job hash of ARGV[6]]]
-- ARGV: job id, group, queue, idempotency ttl, request fingerprint, the id of a job found gone ('' for
--       none), request token (never ''), hash field/value pairs...
-- Returns {1, id} for a created job, {0, id} for an earlier one (same idempotency key and request,
-- or a caller-chosen id that exists), {-1, id} when the key is bound to a different request. An
-- earlier job whose record is at hand (a caller-chosen id, or the job ARGV[6] names) adds its
-- status: {0, id, status}.
-- A record answers for its job only while the job's record exists: the caller, told an earlier id,
-- runs this again naming that job (ARGV[6], KEYS[6]); if the record still names it and it is gone
-- (expired RESULT_TTL after it ended, or evicted), the record is forgotten like an expired one.
-- The job keeps the request token it was created with (field submit_token). A call that finds its
-- own job, under its own id and carrying its own token, is the request that created it sent again
-- (a client such as redis-py resends a command whose reply was lost with its connection, after the
-- script ran): it is answered {1, id, status}, as the lost reply would have been, with the status
-- the job is in now.
local function resent()
  return redis.call('HGET', KEYS[1], 'submit_token') == ARGV[7]
end
if KEYS[5] then
  local kind = redis.call('TYPE', KEYS[5])['ok']
  local seen, fingerprint = false, false
  if kind == 'hash' then
    local h = redis.call('HMGET', KEYS[5], 'job', 'fingerprint')
    seen, fingerprint = h[1], h[2]
  elseif kind == 'string' then
    -- Written before fingerprints were stored: only the job id is known, not its request, so it
    -- counts as a match (as it did then) rather than refusing every retry across the upgrade.
    seen = redis.call('GET', KEYS[5])
  end
  if seen and not (KEYS[6] and seen == ARGV[6] and redis.call('EXISTS', KEYS[6]) == 0) then
    if fingerprint and fingerprint ~= ARGV[5] then return {-1, seen} end
    if seen == ARGV[1] and resent() then return {1, seen, redis.call('HGET', KEYS[1], 'status')} end
    if KEYS[6] and seen == ARGV[6] then return {0, seen, redis.call('HGET', KEYS[6], 'status')} end
    return {0, seen}
  end  -- no record, a record without a job, or one whose job is gone: the write below replaces it
end
-- A caller-chosen id reused (or this request's own job, sent again):
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {resent() and 1 or 0, ARGV[1], redis.call('HGET', KEYS[1], 'status')}
end
if KEYS[5] then
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[5], 'job', ARGV[1], 'fingerprint', ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', entry, 'submit_token', ARGV[7])
redis.call('INCR', KEYS[3])
redis.call('SADD', KEYS[4], ARGV[3])
return {1, ARGV[1]}
""",
)

BIND_KEY = Script(
    "bind_key",
    """
-- KEYS: idempotency record, the job hash of ARGV[1].  ARGV: job id, request fingerprint, idempotency ttl
-- Binds an unused idempotency key to a job that exists (a request answered from the result cache
-- carried the key), so that its retries get that job, as SUBMIT's would. Returns 1 when the key
-- names ARGV[1] for this request now, 0 when it does not: the record is there already (another job,
-- another request, or the old string format), or the job is gone. On 0 the caller submits as usual
-- and SUBMIT decides what the key means.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'hash' then
  local h = redis.call('HMGET', KEYS[1], 'job', 'fingerprint')
  if h[1] == ARGV[1] and h[2] == ARGV[2] then return 1 end
  return 0
end
if kind ~= 'none' or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'job', ARGV[1], 'fingerprint', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

INDEX_KEYED = Script(
    "index_keyed",
    """
-- KEYS: the model's keyed-queues zset, the queues set.  ARGV: queue, model, until (now + idempotency
-- ttl), now
-- Notes that the queue may hold an idempotency record until ARGV[3] (a later time kept), and drops
-- the queues whose records have all expired. Created, the zset starts with every queue of the model
-- in the queues set, until ARGV[3] (records written before the zset existed are found as before),
-- and the member '' (+inf, never dropped) that says it was: readers fall back to the set without it.
if redis.call('ZSCORE', KEYS[1], '') == false then
  for _, q in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if (string.match(q, '^(.*):') or q) == ARGV[2] then redis.call('ZADD', KEYS[1], 'GT', ARGV[3], q) end
  end
  redis.call('ZADD', KEYS[1], '+inf', '')
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
return 1
""",
)

CANCEL = Script(
    "cancel",
    """
-- KEYS: job hash.  ARGV: now, result ttl, done channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status ~= 'queued' then return status end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'cancelled')
return 'cancelled'
""",
)

# The dead-letter transition is shared by START (a reclaimed job whose last attempt's worker died)
# and FINISH (the last attempt raised): one Lua function, spliced into both scripts. So is the
# completions-stream entry, which both write for the attempt that ended.
_DEAD_LETTER = """
local function dead_letter(job, dead, job_id, attempts, err, now, ttl, maxlen, channel)
  redis.call('HSET', job, 'status', 'dead', 'error', err, 'finished_at', now)
  redis.call('EXPIRE', job, ttl)
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*',
             'job', job_id, 'attempts', attempts, 'error', err, 'dead_at', now)
  redis.call('PUBLISH', channel, 'dead')
end
-- submitted_at rides along so a reader of the stream alone knows each job's latency. duration is
-- '' for an attempt lost with its worker: its service time is unknown. A submitted_at that is not a
-- number as the codec writes it (a corrupt record, failed for that) is left out: every reader of
-- the stream (the autoscaler, each tick) would otherwise fail on the entry until it is trimmed.
local function completed(completions, maxlen, job_id, now, duration, worker, status, submitted_at)
  if not (string.match(submitted_at, '^%-?%d+%.?%d*$') or
          string.match(submitted_at, '^%-?%d+%.?%d*[eE][%-+]?%d+$')) then
    submitted_at = ''
  end
  redis.call('XADD', completions, 'MAXLEN', '~', maxlen, '*', 'job', job_id, 'finished_at', now,
             'duration', duration, 'worker', worker, 'status', status, 'submitted_at', submitted_at)
end
"""

START = Script(
    "start",
    _DEAD_LETTER
    + """
-- KEYS: job hash, stream, dead-letter stream, completions stream
-- ARGV: group, entry id, worker, now, max attempts, result ttl, dead maxlen, job id, channel,
--       completions maxlen, attempt token ('' for none)
-- Returns {'run', flat job hash}, {reason} when the entry must not run (it is then acked), or
-- {'not-held'} when this worker no longer holds the entry (nothing is touched: it is another's).
local function drop()
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
-- A delivery can go stale before it starts: a second entry fetched with the first waits,
-- unrenewed, while the first runs, and another worker may reclaim it meanwhile. Starting it
-- then would take the job over from a live holder, so only the entry's holder may start it,
-- and starting renews its lease (its idle clock ran while it waited).
local held = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #held == 0 or held[1][2] ~= ARGV[3] then return {'not-held'} end
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
local h = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'error', 'entry', 'worker', 'submitted_at',
                     'attempt_token')
local status = h[1]
if not status then drop(); return {'missing'} end
-- An entry field names the delivery the job is waiting for: another one is stale. An empty or
-- missing field names none; the record is corrupt, failed below.
if h[4] and h[4] ~= '' and h[4] ~= ARGV[2] then drop(); return {'stale'} end
if status ~= 'queued' and status ~= 'running' then drop(); return {status} end
-- The caller's retry of a START whose reply was lost (the connection dropped after the script
-- ran): the attempt it began is this one, so it is handed back as is, not counted again. A new
-- delivery (a reclaim, a restarted process under the same name) brings a new token.
if status == 'running' and ARGV[11] ~= '' and h[7] == ARGV[11] and h[5] == ARGV[3] then
  return {'run', redis.call('HGETALL', KEYS[1])}
end
-- A record no delivery can run is failed now, naming the field, as a record that starts but does
-- not decode is failed by its worker (with the same error prefix); it is never started.
local function malformed(why, ...)
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', 'malformed job record: ' .. why,
             'finished_at', ARGV[4], ...)
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('PUBLISH', ARGV[9], 'failed')
  completed(KEYS[4], ARGV[10], ARGV[8], ARGV[4], '', ARGV[3], 'failed', h[6] or '')
  drop()
  return {'failed'}
end
-- Without its entry the job cannot be finished: FINISH only accepts the delivery the record names,
-- so every outcome was discarded as 'lost', the entry reclaimed, the model run again, until the
-- attempts ran out and the job was dead-lettered as if its workers had died.
if not h[4] or h[4] == '' then return malformed("field 'entry' is missing") end
local attempts = tonumber(h[2] or '0')
if not attempts then
  -- A corrupt counter cannot be compared with max attempts. The script's error used to reach the
  -- worker on every delivery (crashing it), and as no attempt was ever counted the entry was never
  -- dead-lettered. The counter is reset (no attempt started) so the failed record reads back, with
  -- the bad value kept in its error.
  return malformed("field 'attempts' is malformed ('" .. string.sub(h[2], 1, 60) .. "'): not a number",
                   'attempts', 0)
end
local err = h[3] or ''
if status == 'running' then
  err = 'attempt ' .. attempts .. ': worker ' .. (h[5] or '?') ..
        ' stopped heartbeating mid-job; entry reclaimed after the visibility timeout'
end
if attempts >= tonumber(ARGV[5]) then
  dead_letter(KEYS[1], KEYS[3], ARGV[8], attempts, err, ARGV[4], ARGV[6], ARGV[7], ARGV[9])
  -- The job's final answer, for whoever counts latencies off the completions stream.
  completed(KEYS[4], ARGV[10], ARGV[8], ARGV[4], '', h[5] or '', 'dead', h[6] or '')
  drop()
  return {'dead'}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[4], 'worker', ARGV[3],
           'attempts', attempts + 1, 'error', err, 'attempt_token', ARGV[11])
return {'run', redis.call('HGETALL', KEYS[1])}
""",
)

FINISH = Script(
    "finish",
    _DEAD_LETTER
    + """
-- KEYS: job hash, stream, completions stream, dead-letter stream
-- ARGV: group, entry id, worker, now, outcome (succeeded|failed|error), payload (output JSON or
--       error text), service seconds, max attempts, result ttl, completions maxlen, dead maxlen,
--       job id, channel, attempt token ('' for none)
-- Returns the job's resulting status, 'lost' if this worker no longer holds the job (it was
-- reclaimed by another: that worker's delivery must stay pending, so nothing is acked), or
-- 'missing' if the record is gone.
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'entry', 'submitted_at',
                     'attempt_token')
if not h[1] then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return 'missing'
end
-- The caller's retry of a FINISH whose reply was lost: the attempt its token began has ended
-- (this script ran), and no other has begun, so what it recorded is the answer, not 'lost'.
if h[1] ~= 'running' and ARGV[14] ~= '' and h[6] == ARGV[14] and h[2] == ARGV[3] then return h[1] end
if h[1] ~= 'running' or h[2] ~= ARGV[3] or h[4] ~= ARGV[2] then return 'lost' end
local outcome = ARGV[5]
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local result
if outcome == 'succeeded' then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'output', ARGV[6], 'error', '',
             'finished_at', ARGV[4])
  result = 'succeeded'
elseif outcome == 'failed' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[6], 'finished_at', ARGV[4])
  result = 'failed'
elseif tonumber(h[3] or '0') >= tonumber(ARGV[8]) then
  dead_letter(KEYS[1], KEYS[4], ARGV[12], h[3], ARGV[6], ARGV[4], ARGV[9], ARGV[11], ARGV[13])
  result = 'dead'
else
  local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[12])
  redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[6], 'entry', entry)
  result = 'queued'
end
completed(KEYS[3], ARGV[10], ARGV[12], ARGV[4], ARGV[7], ARGV[3], result, h[5] or '')
if result == 'succeeded' or result == 'failed' then
  redis.call('EXPIRE', KEYS[1], ARGV[9])
  redis.call('PUBLISH', ARGV[13], result)
end
return result
""",
)

INDEX_WORKER = Script(
    "index_worker",
    """
-- KEYS: the queue's worker set.  ARGV: worker name, worker ttl (seconds)
-- Stamps the worker with the server's clock and drops members not stamped for a ttl. Stamped and
-- judged with each writer's own clock, a worker whose clock ran a ttl behind its peers' was
-- dropped by every peer's heartbeat, and a reader listing the set between its own beats missed it
-- (a busy pod seen as idle).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
""",
)

LIVE_WORKERS = Script(
    "live_workers",
    """
-- KEYS: the queue's worker set.  ARGV: max age (seconds)
-- Members stamped (by INDEX_WORKER, with the server's clock) within the last ARGV[1] seconds by the
-- same clock: a reader's own bound on how long a silent worker still counts, which no reader's or
-- writer's clock can skew. Writes nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
""",
)

RENEW = Script(
    "renew",
    """
-- KEYS: stream.  ARGV: group, consumer, entry id
-- Resets the idle time of an entry this consumer still holds, so a job that runs longer than the
-- visibility timeout is not reclaimed while its worker is alive. Never steals: 0 if not ours.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
""",
)

FORGET_CONSUMERS = Script(
    "forget_consumers",
    """
-- KEYS: streams.  ARGV: group, consumer name or '', min idle ms
-- Deletes consumers that hold no pending entry: the named one (a worker deregistering), or with
-- '' every consumer idle longer than min idle ms (pods that died; their entries were reclaimed).
-- Deleting a consumer with pending entries would drop them from the PEL, so those are kept.
local removed = 0
for _, stream in ipairs(KEYS) do
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, ARGV[1])
  if ok then
    for _, c in ipairs(consumers) do
      local info = {}
      for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
      local match
      if ARGV[2] ~= '' then match = info['name'] == ARGV[2]
      else match = tonumber(info['idle']) > tonumber(ARGV[3]) end
      if match and tonumber(info['pending']) == 0 then
        redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], info['name'])
        removed = removed + 1
      end
    end
  end
end
return removed
""",
)

# Retiring a version (jobqueue.retire): SWEEP empties a stream of the entries no worker will run and,
# given a target, moves the jobs one would run; RETIRE deletes the queue once nothing is left in it.
SWEEP = Script(
    "sweep",
    """
-- KEYS: source stream, target stream (same priority, of another version), the job hash of each
--       entry id in ARGV[5..] (KEYS[3..])
-- ARGV: group, target queue ('' to move nothing), target version, dry ('1' writes nothing),
--       entry ids...
-- Per entry: gone (served or moved since the caller read it) or held by a consumer (in flight) is
-- left alone. An entry START would skip (its job missing, not queued or running, or naming another
-- delivery) is deleted, as START would drop it. A job START would run is moved with a target: a new
-- entry at the tail of the target stream, the record repointed at it (queue, version, entry: a
-- delivery of the old entry would now be stale) and the old entry deleted, all in this script, so
-- no worker or submission sees the job in both queues or in neither. Without a target it is kept.
-- A running job on an entry nobody holds (its consumer deleted by hand) runs as START reclaims it.
-- Returns {runnable (moved or kept), dropped, held}.
local runnable, dropped, held = 0, 0, 0
local dry = ARGV[4] == '1'
for i = 5, #ARGV do
  local id, job = ARGV[i], KEYS[i - 2]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #found == 0 then
    -- nothing to do
  elseif type(p) == 'table' and not p.err and #p > 0 then
    held = held + 1
  else
    local h = redis.call('HMGET', job, 'status', 'entry')
    local live = (h[1] == 'queued' or h[1] == 'running') and (not h[2] or h[2] == '' or h[2] == id)
    if not live then
      dropped = dropped + 1
      if not dry then redis.call('XDEL', KEYS[1], id) end
    else
      runnable = runnable + 1
      if ARGV[2] ~= '' and not dry then
        if redis.call('EXISTS', KEYS[2]) == 0 then
          redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
        end
        local fields, job_id = found[1][2], ''
        for f = 1, #fields, 2 do if fields[f] == 'job' then job_id = fields[f + 1] end end
        local entry = redis.call('XADD', KEYS[2], '*', 'job', job_id)
        redis.call('HSET', job, 'queue', ARGV[2], 'version', ARGV[3], 'entry', entry)
        redis.call('XDEL', KEYS[1], id)
      end
    end
  end
end
return {runnable, dropped, held}
""",
)

RETIRE = Script(
    "retire",
    """
-- KEYS: high stream, normal stream, arrivals, completions, workers, dead letters, queues set,
--       the model's keyed-queues zset
-- ARGV: queue, model, arrivals expected ('' not checked), dead letters: 'delete' or seconds to keep,
--       group
-- Deletes the queue's keys and its membership in the queues set and the keyed index, in one step
-- that nothing can interleave with, and only if nothing is left to serve: refused with
-- {'busy', entries, pending} while a stream holds an entry or a delivery is unacknowledged, and with
-- {'arrived', count} when the arrivals counter is no longer ARGV[3] (a submission since the caller
-- checked: something still routes here). Dead letters are deleted or kept ARGV[4] seconds. A keyed
-- index left with only its marker '' and no queue of the model is deleted (readers fall back to the
-- queues set, which then lists none either). Returns {'retired', dead letters kept}.
local entries, pending = 0, 0
for s = 1, 2 do
  entries = entries + redis.call('XLEN', KEYS[s])
  local p = redis.pcall('XPENDING', KEYS[s], ARGV[5])
  if type(p) == 'table' and not p.err then pending = pending + tonumber(p[1]) end
end
if entries + pending > 0 then return {'busy', entries, pending} end
local arrivals = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[3] ~= '' and arrivals ~= tonumber(ARGV[3]) then return {'arrived', arrivals} end
local kept = 0
if ARGV[4] == 'delete' then
  redis.call('DEL', KEYS[6])
else
  kept = redis.call('XLEN', KEYS[6])
  if kept > 0 then redis.call('EXPIRE', KEYS[6], ARGV[4]) else redis.call('DEL', KEYS[6]) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
if redis.call('ZCARD', KEYS[8]) == 1 and redis.call('ZSCORE', KEYS[8], '') then
  local others = false
  for _, q in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    if (string.match(q, '^(.*):') or q) == ARGV[2] then others = true; break end
  end
  if not others then redis.call('DEL', KEYS[8]) end
end
return {'retired', kept}
""",
)
