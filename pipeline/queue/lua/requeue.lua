-- uses: _lib
-- Put a dead or failed job back in its queue with a fresh set of attempts.
-- KEYS[1] job hash   KEYS[2] dead zset   KEYS[3] queue zset   KEYS[4] wake list
-- KEYS[5] events stream
-- ARGV[1] job id   ARGV[2] events maxlen
-- Returns 1 when requeued, 0 when the job is not dead or failed.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'dead' and state ~= 'failed' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0, 'cancel', 0, 'requeued_ms', now_ms())
redis.call('HDEL', KEYS[1], 'finished_ms', 'result')
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'score'), ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, 999)
emit(KEYS[5], ARGV[2], KEYS[1], ARGV[1], 'queued', {requeued = '1'})
return 1
