-- uses: clock
-- The queue scripts' shared helpers, prepended by pipeline/redis/scripts.py to scripts that
-- say `-- uses: _lib`. Never called on its own.

-- Append a progress event (job, state, task, queue, batch, attempt, extra) to the stream.
local function emit(events_key, maxlen, job_key, id, state, extra)
  local f = redis.call('HMGET', job_key, 'task', 'queue', 'batch', 'attempt')
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
  redis.call('LPUSH', wake_key, id)
  redis.call('LTRIM', wake_key, 0, 999)
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
