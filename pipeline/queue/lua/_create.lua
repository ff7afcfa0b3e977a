-- uses: _lib
-- Creating one job: the one definition of what an enqueue does, prepended by
-- pipeline/redis/scripts.py to enqueue.lua (one job per call) and enqueue_many.lua (many jobs
-- per call, each created exactly as enqueue.lua would, in order). Never called on its own.
--
-- `ctx`, what the jobs of one call share: keys `delayed` (zset), `seq` (counter), `events`
--   (stream), `queues` (set of queue names), `idle` (zset: idle worker id -> registration
--   deadline ms; idle.lua), `idle_workers` (hash: worker id -> JSON {wake, queues,
--   min_lease_ms, defs}), `active` (zset), `fence` (counter); `maxlen` (events stream),
--   `first_lease_ms` (a hand-off's first lease), `now` (Redis clock ms); `listed` and `ready`,
--   empty tables create_job fills (queue names added to `queues`, queue keys it added a job
--   to: nothing in one script call removes either, so later jobs skip those reads).
-- `job`, one job: keys `key` (its hash), `queue_key` (zset), `wake_key` (list), `idem_key`
--   (its idempotency key, by digest), `legacy_key` (the same key under its name before it was
--   a digest: Keys.idempotency_by_key, read, never written); `id`; `ttl` (idempotency TTL s,
--   '0': no key); `run_at` (ms, 0: now); `delay_ms` (from now on the Redis clock, 0: none);
--   `priority` (0-9, 9 runs first); `state` (queued | waiting: a chord callback held until
--   its group is done); `queue` (name); `replaced` (a job id whose idempotency key the job
--   may take over: one that ended without a result; '' for none); `nonce` (of a hand-off's
--   fencing token); `fields` (a flat list of field names and values, each value within
--   hash-max-listpack-value: pipeline/queue/record.py).
--
-- A job that can start now, in a queue with nothing ahead of it, goes straight to an idle
-- worker serving its queue when one is registered (pipeline/queue/handoff.py): claimed for
-- it here (_lib claim_job, exactly as claim.lua would, with that worker's definitions) and
-- pushed, as a JSON object of its hash, onto the worker's own wake list, which it is blocked
-- on. The wake list's name is one the worker wrote with its registration (Keys.worker_wake:
-- the same hash tag as every key here); registrations are only made outside a Cluster.

-- An idle worker serving `queue`, removed from the idle set (one hand-off per registration),
-- or nil. Registrations past their deadline (a worker that died idle) go.
local function take_idle_worker(ctx, queue, now)
  local idle_key, idle_workers_key = ctx.idle, ctx.idle_workers
  -- the earliest deadlines first: one read, the lapsed ones among them dropped when seen
  local idle = redis.call('ZRANGE', idle_key, 0, 15, 'WITHSCORES')
  if #idle == 0 then return nil end
  if tonumber(idle[2]) <= now then
    local gone = redis.call('ZRANGEBYSCORE', idle_key, '-inf', now)
    redis.call('ZREMRANGEBYSCORE', idle_key, '-inf', now)
    redis.call('HDEL', idle_workers_key, unpack(gone))
    idle = redis.call('ZRANGE', idle_key, 0, 15, 'WITHSCORES')
  end
  for i = 1, #idle, 2 do
    local worker = idle[i]
    local raw = redis.call('HGET', idle_workers_key, worker)
    local info = raw and cjson.decode(raw)
    if info then
      for _, q in ipairs(info.queues) do
        if q == queue then
          redis.call('ZREM', idle_key, worker)
          redis.call('HDEL', idle_workers_key, worker)
          return worker, info
        end
      end
    end
  end
  return nil
end

-- `record`, the fields create_job wrote besides `job.fields`: with those and the claim's, the
-- record the worker receives, built here rather than read back (HGETALL and the object made
-- from it were a seventh of a hand-off's instructions in Redis).
local function hand_off(ctx, job, now, record)
  local queue_key = job.queue_key
  -- jobs ahead go first
  if ctx.ready[queue_key] or redis.call('ZCARD', queue_key) > 0 then return false end
  local worker, info = take_idle_worker(ctx, job.queue, now)
  if not worker then return false end
  record.enqueued_ms = record.created_ms
  local fields = job.fields
  for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
  -- queued, then at once active: the hash is written active only, the events say both
  emit(ctx.events, ctx.maxlen, job.key, job.id, 'queued', nil,
    {record.task, record.queue, record.batch, record.attempt})
  local claimed, attempt = claim_job(job.key, job.id, worker, info.min_lease_ms, info.defs,
    job.nonce, ctx.active, ctx.fence, ctx.events, ctx.maxlen, now, ctx.first_lease_ms,
    {record.task, record.options, record.queue, record.batch})
  for i = 1, #claimed, 2 do record[claimed[i]] = claimed[i + 1] end
  record.attempt = attempt
  local wake = info.wake
  redis.call('LPUSH', wake, cjson.encode(record))
  redis.call('PEXPIRE', wake, 60000)
  return true
end

-- Create `job`, or find the one its id or idempotency key names. Returns 1, id when created;
-- 0, the existing id for a known idempotency key or job id (a client retrying an enqueue
-- whose reply a failover lost must not reset a job that ran).
local function create_job(ctx, job)
  local job_key, idem_key, legacy_key = job.key, job.idem_key, job.legacy_key
  local seq_key, queues_key, delayed_key = ctx.seq, ctx.queues, ctx.delayed
  local id, now = job.id, ctx.now
  if redis.call('EXISTS', job_key) == 1 then return 0, id end
  if job.ttl ~= '0' then
    local existing = redis.call('GET', idem_key) or redis.call('GET', legacy_key)
    if existing and existing ~= job.replaced then return 0, existing end
    redis.call('SET', idem_key, id, 'EX', job.ttl)
  end
  local seq = redis.call('INCR', seq_key)
  local score = (9 - tonumber(job.priority)) * 1e12 + seq
  -- whole numbers as text with %d (as claim_job does): the digits '%.0f' and Redis (%.17g)
  -- write, without their floating-point formatting
  local written = {id = id, score = string.format('%d', score), attempt = '0',
    created_ms = string.format('%d', now), cancel = '0'}
  redis.call('HSET', job_key, 'id', id, 'score', written.score, 'attempt', '0',
    'created_ms', written.created_ms, 'cancel', '0', 'enqueued_ms', written.created_ms,
    unpack(job.fields))
  if not ctx.listed[job.queue] then
    redis.call('SADD', queues_key, job.queue)
    ctx.listed[job.queue] = true
  end
  local run_at = tonumber(job.run_at)
  local delay_ms = tonumber(job.delay_ms)
  if delay_ms > 0 then run_at = math.max(run_at, now + delay_ms) end
  if job.state == 'waiting' then
    redis.call('HSET', job_key, 'state', 'waiting')
    emit(ctx.events, ctx.maxlen, job_key, id, 'waiting', nil)
  elseif run_at > now then
    redis.call('ZADD', delayed_key, run_at, id)
    redis.call('HSET', job_key, 'state', 'scheduled', 'run_at_ms', run_at)
    emit(ctx.events, ctx.maxlen, job_key, id, 'scheduled', nil)
  elseif not hand_off(ctx, job, now, written) then
    make_ready(job_key, job.queue_key, job.wake_key, ctx.events, ctx.maxlen, id, nil)
    ctx.ready[job.queue_key] = true
  end
  return 1, id
end
