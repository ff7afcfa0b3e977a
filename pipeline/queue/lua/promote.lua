-- uses: _lib
-- Move a delayed job (a later start, or a retry's back-off) into its queue once it is due.
-- KEYS[1] delayed zset   KEYS[2] job hash   KEYS[3] queue zset   KEYS[4] wake list
-- KEYS[5] events stream
-- ARGV[1] job id   ARGV[2] events maxlen
-- Returns 1 when promoted, 0 when not due or already taken by another sweeper.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > now_ms() then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], 'state') ~= 'scheduled' then return 0 end
redis.call('HSET', KEYS[2], 'state', 'queued')
redis.call('HDEL', KEYS[2], 'run_at_ms')
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[2], 'score'), ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, 999)
emit(KEYS[5], ARGV[2], KEYS[2], ARGV[1], 'queued', nil)
return 1
