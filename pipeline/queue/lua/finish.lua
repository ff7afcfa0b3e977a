-- uses: _lib
-- End an attempt, fenced by the claim's token: a stale worker's word is refused.
-- KEYS[1] job hash   KEYS[2] active zset   KEYS[3] events stream   KEYS[4] queue zset
-- KEYS[5] delayed zset   KEYS[6] dead zset   KEYS[7] wake list
-- KEYS[8] group hash   KEYS[9] group results   KEYS[10] callback job   KEYS[11] callback queue
-- KEYS[12] callback wake list   (8-12 are placeholders for jobs outside a group)
-- KEYS[13] stats: settled counts   KEYS[14] stats: duration histogram
-- ARGV[1] job id   ARGV[2] token   ARGV[3] outcome: complete | failed | dead | cancelled |
--   over_budget (terminal), retry (back after ARGV[8] ms), postpone (back after ARGV[8] ms,
--   attempt not counted: waiting for a quota or budget window), release (back now, attempt
--   not counted)
-- ARGV[4] result JSON   ARGV[5] error   ARGV[6] traceback   ARGV[7] record TTL s
-- ARGV[8] retry delay ms   ARGV[9] events maxlen
-- ARGV[10] settled field   ARGV[11] duration bucket field   ARGV[12] duration count field
-- ARGV[13] duration sum field   ARGV[14] duration s (counted only when applied)
-- ARGV[15] reason: a typed pipeline.errors.Reason ('' for complete and release: cleared)
-- ARGV[16] settled field counted instead of ARGV[10] when the outcome becomes `cancelled`
-- Returns the outcome applied (ARGV[3], or `cancelled` for an attempt that would have come
-- back but whose job was cancelled while it ran) when applied, or when this token's
-- settlement was applied before (a client retrying a call whose reply a failover lost: the
-- outcome applied then, kept in `settled_outcome`, since a cancel or a requeue since may
-- have changed the job's flag); 0 when the token is stale.
local id, outcome = ARGV[1], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'cancel', 'settled_token',
  'settled_outcome')
local settled_field, reason = ARGV[10], ARGV[15]
if f[3] == '1' and (outcome == 'retry' or outcome == 'postpone' or outcome == 'release') then
  outcome = 'cancelled'  -- cancelled while running: do not come back for another attempt
  settled_field, reason = ARGV[16], 'cancelled'
end
if f[1] ~= 'active' or f[2] ~= ARGV[2] then
  if f[4] == ARGV[2] and ARGV[2] ~= '' then return f[5] or outcome end
  return 0
end
local now = now_ms()
redis.call('HINCRBY', KEYS[13], settled_field, 1)
redis.call('HINCRBY', KEYS[14], ARGV[11], 1)
redis.call('HINCRBY', KEYS[14], ARGV[12], 1)
redis.call('HINCRBYFLOAT', KEYS[14], ARGV[13], ARGV[14])
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[1], 'token', 'lease_deadline_ms')
redis.call('HSET', KEYS[1], 'settled_token', ARGV[2], 'settled_outcome', outcome)
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'error', ARGV[5], 'traceback', ARGV[6])
end
if reason ~= '' then
  redis.call('HSET', KEYS[1], 'reason', reason)
else
  redis.call('HDEL', KEYS[1], 'reason')
end
if outcome == 'retry' or outcome == 'postpone' then
  if outcome == 'postpone' then redis.call('HINCRBY', KEYS[1], 'attempt', -1) end
  redis.call('HSET', KEYS[1], 'state', 'scheduled', 'run_at_ms', now + tonumber(ARGV[8]))
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), id)
  emit(KEYS[3], ARGV[9], KEYS[1], id, 'scheduled', {error = ARGV[5]})
  return outcome
end
if outcome == 'release' then
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
  make_ready(KEYS[1], KEYS[4], KEYS[7], KEYS[3], ARGV[9], id, {released = '1'})
  return outcome
end
redis.call('HSET', KEYS[1], 'state', outcome, 'finished_ms', now)
if outcome == 'complete' then
  -- A complete job has no error: what earlier attempts met (a lost lease...) is history,
  -- kept in the ledger's attempts, not shown as the final state.
  redis.call('HSET', KEYS[1], 'result', ARGV[4])
  redis.call('HDEL', KEYS[1], 'error', 'traceback')
end
if outcome == 'dead' then
  redis.call('ZADD', KEYS[6], now, id)
else
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
emit(KEYS[3], ARGV[9], KEYS[1], id, outcome, {error = ARGV[5]})
local result = nil
if outcome == 'complete' then result = ARGV[4] end
local err = nil
if ARGV[5] ~= '' then err = ARGV[5] end
member_done(KEYS[1], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[3], ARGV[9],
  ARGV[7], id, outcome, result, err)
return outcome
