-- uses: _lib
-- Claim one queued job for a worker: the only way a job becomes active.
-- KEYS[1] queue zset   KEYS[2] job hash   KEYS[3] active zset (score: lease deadline ms)
-- KEYS[4] fence counter   KEYS[5] events stream
-- ARGV[1] job id   ARGV[2] worker id   ARGV[3] minimum lease ms   ARGV[4] events maxlen
-- Returns the job hash as a flat list (with the new token and attempt), or false when another
-- worker took it first.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('HGET', KEYS[2], 'state') ~= 'queued' then return false end
local now = now_ms()
local expected_ms = math.floor(tonumber(redis.call('HGET', KEYS[2], 'expected_s') or '0') * 1000)
local lease_ms = math.max(2 * expected_ms, tonumber(ARGV[3]))
local token = redis.call('INCR', KEYS[4])
redis.call('HINCRBY', KEYS[2], 'attempt', 1)
redis.call('HSET', KEYS[2], 'state', 'active', 'token', token, 'worker', ARGV[2],
  'started_ms', now, 'lease_ms', lease_ms, 'lease_deadline_ms', now + lease_ms)
redis.call('ZADD', KEYS[3], now + lease_ms, ARGV[1])
emit(KEYS[5], ARGV[4], KEYS[2], ARGV[1], 'active', {worker = ARGV[2]})
return redis.call('HGETALL', KEYS[2])
