-- uses: _lib
-- Claim queued jobs for a worker's free slots: the only way a job becomes active.
-- The worker names the jobs it saw at the head of the queue (one per free slot, and only
-- one when an admission gate has to see each job first).
-- KEYS[1] queue zset   KEYS[2] active zset (score: lease deadline ms)   KEYS[3] fence counter
-- KEYS[4] events stream   KEYS[5..] job hashes, in the order of ARGV[5..]
-- ARGV[1] worker id   ARGV[2] minimum lease ms   ARGV[3] events maxlen
-- ARGV[4] 'head' to claim the (single) job only while it is the queue's head, else 'any'
-- ARGV[5..] job ids
-- Returns one entry per job: its hash as a flat list (with the new token and attempt), or
-- false when another worker took it first.
local now = now_ms()
local out = {}
if ARGV[4] == 'head' then
  -- a woken worker names the job its wake token carried; priority order still rules
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)
  if head[1] ~= ARGV[5] then return {false} end
end
for i = 5, #KEYS do
  local id, job = ARGV[i], KEYS[i]
  if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('HGET', job, 'state') == 'queued' then
    local expected_ms = math.floor(tonumber(redis.call('HGET', job, 'expected_s') or '0') * 1000)
    local lease_ms = math.max(2 * expected_ms, tonumber(ARGV[2]))
    local token = redis.call('INCR', KEYS[3])
    redis.call('HINCRBY', job, 'attempt', 1)
    redis.call('HSET', job, 'state', 'active', 'token', token, 'worker', ARGV[1],
      'started_ms', now, 'lease_ms', lease_ms, 'lease_deadline_ms', now + lease_ms)
    redis.call('ZADD', KEYS[2], now + lease_ms, id)
    emit(KEYS[4], ARGV[3], job, id, 'active', {worker = ARGV[1]})
    out[#out + 1] = redis.call('HGETALL', job)
  else
    out[#out + 1] = false
  end
end
return out
