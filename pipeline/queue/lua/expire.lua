-- uses: _lib
-- Reclaim a job whose lease ran out (its worker died or lost Redis): back to its queue with
-- the attempt counted, or to the dead-letter set after its last attempt.
-- KEYS: as finish.lua (job, active, events, queue, delayed, dead, wake, group, group results,
--   callback job, callback queue, callback wake)
-- KEYS[13] the own wake list of the worker the job was claimed for (Keys.worker_wake)
-- ARGV[1] job id   ARGV[2] record TTL s   ARGV[3] events maxlen
-- Returns 0 nothing to do (renewed meanwhile), 1 requeued, 2 dead, 3 cancelled, 4 back in
-- its queue untouched: it was handed to an idle worker (handoff.py) that never took it off
-- its wake list (it died idle), so it never started and its attempt does not count.
local id = ARGV[1]
local deadline = redis.call('ZSCORE', KEYS[2], id)
local now = now_ms()
if not deadline or tonumber(deadline) > now then return 0 end
redis.call('ZREM', KEYS[2], id)
local f = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'max_attempts', 'cancel', 'worker')
if f[1] ~= 'active' then return 0 end
for _, entry in ipairs(redis.call('LRANGE', KEYS[13], 0, -1)) do
  if string.sub(entry, 1, 1) == '{' and cjson.decode(entry).id == id then
    redis.call('LREM', KEYS[13], 1, entry)
    redis.call('HDEL', KEYS[1], 'token', 'lease_deadline_ms', 'worker')
    redis.call('HINCRBY', KEYS[1], 'attempt', -1)
    make_ready(KEYS[1], KEYS[4], KEYS[7], KEYS[3], ARGV[3], id, {released = '1'})
    return 4
  end
end
local msg = 'lease expired on worker ' .. (f[5] or '?') .. ' (worker died or lost Redis)'
redis.call('HDEL', KEYS[1], 'token', 'lease_deadline_ms')
redis.call('HSET', KEYS[1], 'error', msg)
redis.call('HINCRBY', KEYS[1], 'lease_expiries', 1)
emit(KEYS[3], ARGV[3], KEYS[1], id, 'lease_expired', {worker = f[5] or ''})
local outcome
if f[4] == '1' then
  outcome = 'cancelled'
elseif tonumber(f[2] or '1') < tonumber(f[3] or '1') then
  make_ready(KEYS[1], KEYS[4], KEYS[7], KEYS[3], ARGV[3], id, nil)
  return 1
else
  outcome = 'dead'
end
local reason = 'lease_expired'
if outcome == 'cancelled' then reason = 'cancelled' end
redis.call('HSET', KEYS[1], 'state', outcome, 'finished_ms', now, 'reason', reason)
if outcome == 'dead' then
  redis.call('ZADD', KEYS[6], now, id)
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
emit(KEYS[3], ARGV[3], KEYS[1], id, outcome, {error = msg})
member_done(KEYS[1], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[3], ARGV[3],
  ARGV[2], id, outcome, nil, msg)
if outcome == 'dead' then return 2 end
return 3
