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
redis.call('HDEL', KEYS[2], 'run_at_ms')
make_ready(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[1], nil)
return 1
