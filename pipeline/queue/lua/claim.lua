-- uses: _lib
-- Claim queued jobs for a worker's free slots: the only way a job becomes active.
-- The worker names the jobs it saw at the head of the queue (one per free slot, and only
-- one when an admission gate has to see each job first).
-- Each claimed job is resolved against the claiming worker's own task definitions: an option
-- the caller set at enqueue (the job's `options` JSON) wins, else the worker's definition,
-- else a job of a task this worker does not know gets the minimum lease and one attempt (the
-- worker fails it as unknown). The resolved values are written to the job, and the lease is
-- 2 x its expected duration, at least the minimum.
-- KEYS[1] queue zset   KEYS[2] active zset (score: lease deadline ms)   KEYS[3] fence counter
-- KEYS[4] events stream   KEYS[5..] job hashes, in the order of ARGV[7..]
-- ARGV[1] worker id   ARGV[2] minimum lease ms   ARGV[3] events maxlen
-- ARGV[4] 'head' to claim the (single) job only while it is the queue's head, else 'any'
-- ARGV[5] JSON {task name: {expected_s, timeout_s, max_attempts, retry_delays_s (JSON text)}}
-- ARGV[6] a nonce of this claim call, appended to the fencing token so a token stays unique
--   even if a failover loses the fence counter's last increments
-- ARGV[7..] job ids
-- Returns one entry per job: its hash as a flat list (with the new token and attempt), or
-- false when another worker took it first. The same call sent again (a client retrying after
-- a failover lost the reply) returns the jobs it had claimed rather than losing them.
local now = now_ms()
local out = {}
local may_claim = true
if ARGV[4] == 'head' then
  -- a woken worker names the job its wake token carried; priority order still rules
  may_claim = redis.call('ZRANGE', KEYS[1], 0, 0)[1] == ARGV[7]
end
local defs = cjson.decode(ARGV[5])
for i = 5, #KEYS do
  local id, job = ARGV[i + 2], KEYS[i]
  local removed = may_claim and redis.call('ZREM', KEYS[1], id) == 1
  local now_state = redis.call('HMGET', job, 'state', 'worker', 'token')
  local suffix = '-' .. ARGV[6]
  if removed and now_state[1] == 'queued' then
    local f = redis.call('HMGET', job, 'task', 'options')
    local own = cjson.decode(f[2] or '{}')
    local def = defs[f[1]] or {expected_s = 0, timeout_s = 600, max_attempts = 1,
      retry_delays_s = '[]'}
    local expected_s = tonumber(own.expected_s or def.expected_s)
    local lease_ms = math.max(2 * math.floor(expected_s * 1000), tonumber(ARGV[2]))
    local token = redis.call('INCR', KEYS[3]) .. '-' .. ARGV[6]
    redis.call('HINCRBY', job, 'attempt', 1)
    redis.call('HSET', job, 'state', 'active', 'token', token, 'worker', ARGV[1],
      'started_ms', now, 'lease_ms', lease_ms, 'lease_deadline_ms', now + lease_ms,
      'expected_s', tostring(expected_s),
      'timeout_s', tostring(own.timeout_s or def.timeout_s),
      'max_attempts', tostring(own.max_attempts or def.max_attempts),
      'retry_delays_s', def.retry_delays_s)
    redis.call('ZADD', KEYS[2], now + lease_ms, id)
    emit(KEYS[4], ARGV[3], job, id, 'active', {worker = ARGV[1]})
    out[#out + 1] = redis.call('HGETALL', job)
  elseif now_state[1] == 'active' and now_state[2] == ARGV[1] and now_state[3]
      and string.sub(now_state[3], -#suffix) == suffix then
    out[#out + 1] = redis.call('HGETALL', job)  -- this very claim, retried after a lost reply
  else
    out[#out + 1] = false
  end
end
return out
