-- uses: _lib
-- Cancel a job. A job not yet running ends at once; a running one is flagged, and its
-- worker sees the flag at its next lease renewal, stops the job and releases the lease.
-- KEYS[1] job hash   KEYS[2] queue zset   KEYS[3] delayed zset   KEYS[4] events stream
-- KEYS[5] group hash   KEYS[6] group results   KEYS[7] callback job   KEYS[8] callback queue
-- KEYS[9] callback wake list
-- ARGV[1] job id   ARGV[2] record TTL s   ARGV[3] events maxlen
-- Returns the resulting state: cancelled, cancelling, or the terminal state it already had
-- (false when there is no such job).
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'active' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  emit(KEYS[4], ARGV[3], KEYS[1], id, 'cancelling', nil)
  return 'cancelling'
end
if state ~= 'queued' and state ~= 'scheduled' and state ~= 'waiting' then return state end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
-- Its error says so: what a wait or an earlier attempt said (a retry's error, "in Gemini batch
-- ...") is no longer why it is not running.
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', now_ms(), 'cancel', 1,
  'reason', 'cancelled', 'error', 'cancelled')
redis.call('HDEL', KEYS[1], 'traceback')
redis.call('EXPIRE', KEYS[1], ARGV[2])
emit(KEYS[4], ARGV[3], KEYS[1], id, 'cancelled', nil)
member_done(KEYS[1], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[4], ARGV[3],
  ARGV[2], id, 'cancelled', nil, 'cancelled')
return 'cancelled'
