-- uses: clock
-- The queue scripts' shared helpers, prepended by pipeline/redis/scripts.py to scripts that
-- say `-- uses: _lib`. Never called on its own.

-- Append a progress event (job, state, task, queue, batch, attempt, extra) to the stream;
-- `f`, the job's {task, queue, batch, attempt} when the caller has them, else read here.
local function emit(events_key, maxlen, job_key, id, state, extra, f)
  f = f or redis.call('HMGET', job_key, 'task', 'queue', 'batch', 'attempt')
  local args = {'XADD', events_key, 'MAXLEN', '~', maxlen, '*',
    'job', id, 'state', state, 'task', f[1] or '', 'queue', f[2] or '',
    'batch', f[3] or '', 'attempt', f[4] or '0'}
  if extra then
    for k, v in pairs(extra) do
      table.insert(args, k)
      table.insert(args, v)
    end
  end
  redis.call(unpack(args))
end

-- Put a job (back) in its queue, visible to every worker, and wake one idle worker with
-- its id. The job keeps its original score: priority first, then enqueue order.
local function make_ready(job_key, queue_key, wake_key, events_key, maxlen, id, extra)
  redis.call('HSET', job_key, 'state', 'queued')
  redis.call('ZADD', queue_key, redis.call('HGET', job_key, 'score'), id)
  if redis.call('LPUSH', wake_key, id) > 1000 then redis.call('LTRIM', wake_key, 0, 999) end
  emit(events_key, maxlen, job_key, id, 'queued', extra)
end

-- A chord member reached a terminal state: record its outcome once, and release the
-- callback when it is the last member. HSETNX makes the count exactly-once per member.
-- The group's keys expire `ttl` seconds after its latest member finished, so a chord whose
-- callback never completes does not leave them behind.
local function member_done(job_key, group_key, results_key, cb_key, cb_queue_key, wake_key,
                           events_key, maxlen, ttl, id, state, result_json, err)
  local idx = redis.call('HGET', job_key, 'group_index')
  if not idx or idx == '' then return end
  -- result_json is spliced in as sent, so numbers keep the precision Python gave them
  local outcome = '{"id":' .. cjson.encode(id) .. ',"state":' .. cjson.encode(state) ..
    ',"result":' .. (result_json or 'null') .. ',"error":' ..
    (err and cjson.encode(err) or 'null') .. '}'
  if redis.call('HSETNX', results_key, idx, outcome) == 0 then return end
  local done = redis.call('HINCRBY', group_key, 'done', 1)
  redis.call('EXPIRE', group_key, ttl)
  redis.call('EXPIRE', results_key, ttl)
  local total = tonumber(redis.call('HGET', group_key, 'total'))
  if done >= total and redis.call('HGET', cb_key, 'state') == 'waiting' then
    local cb_id = redis.call('HGET', cb_key, 'id')
    redis.call('HSET', cb_key, 'enqueued_ms', now_ms())
    make_ready(cb_key, cb_queue_key, wake_key, events_key, maxlen, cb_id, nil)
  end
end

-- Make a queued job active for `worker`: the one place a claim's fields are written (claim.lua
-- for a worker's own claim, enqueue.lua for a hand-off to an idle worker). Options the caller
-- set at enqueue (the job's `options` JSON) win over the worker's definition `defs` (decoded
-- claim.lua ARGV[5]); a task the worker does not know gets the minimum lease and one attempt.
-- The lease is 2 x the expected duration, at least `min_lease_ms`; its first deadline is
-- `first_lease_ms` from now when given (a hand-off: the receiving worker renews at once).
-- `known`, the job's {task, options, queue, batch} when the caller has them (a job created in
-- this very script), else read here. Returns the fields written (a flat list, as HSET takes
-- them) and the new attempt number (text), so a caller that needs the record does not read
-- it back.
local function claim_job(job, id, worker, min_lease_ms, defs, nonce, active_key, fence_key,
                         events_key, maxlen, now, first_lease_ms, known)
  local f = known or redis.call('HMGET', job, 'task', 'options', 'queue', 'batch')
  local own = (f[2] and f[2] ~= '{}') and cjson.decode(f[2]) or {}
  local def = defs[f[1]] or {expected_s = 0, timeout_s = 600, max_attempts = 1,
    retry_delays_s = '[]'}
  local expected_s = tonumber(own.expected_s or def.expected_s)
  local lease_ms = math.max(2 * math.floor(expected_s * 1000), tonumber(min_lease_ms))
  -- whole numbers as text once, with %d: the digits Redis writes for a Lua number (%.17g) or
  -- Lua for `..` (%.14g), without their floating-point formatting (a tenth of a hand-off)
  local deadline = string.format('%d', now + math.min(lease_ms, first_lease_ms or lease_ms))
  local token = string.format('%d-%s', redis.call('INCR', fence_key), nonce)
  local attempt = string.format('%d', redis.call('HINCRBY', job, 'attempt', 1))
  local claimed = {'state', 'active', 'token', token, 'worker', worker,
    'started_ms', string.format('%d', now), 'lease_ms', string.format('%d', lease_ms),
    'lease_deadline_ms', deadline,
    'expected_s', tostring(expected_s),
    'timeout_s', tostring(own.timeout_s or def.timeout_s),
    'max_attempts', tostring(own.max_attempts or def.max_attempts),
    'retry_delays_s', def.retry_delays_s}
  redis.call('HSET', job, unpack(claimed))
  redis.call('ZADD', active_key, deadline, id)
  emit(events_key, maxlen, job, id, 'active', {worker = worker},
    {f[1], f[3], f[4], attempt})
  return claimed, attempt
end
