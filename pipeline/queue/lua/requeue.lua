-- uses: _lib
-- Put a job that ended without a result (dead, failed, over_budget or cancelled) back in its
-- queue with a fresh set of attempts.
-- A chord member is re-armed too: its outcome slot is cleared and a callback that already
-- ended (on the member's failure, or with its partial results) is set waiting again, so the
-- callback runs once more, with the new outcome, when the member finishes.
-- KEYS[1] job hash   KEYS[2] dead zset   KEYS[3] queue zset   KEYS[4] wake list
-- KEYS[5] events stream   KEYS[6] group hash   KEYS[7] group results   KEYS[8] callback job
-- (6-8 are placeholders for jobs outside a group)
-- ARGV[1] job id   ARGV[2] events maxlen
-- Returns 1 when requeued, 0 when the job is in any other state.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'dead' and state ~= 'failed' and state ~= 'over_budget' and state ~= 'cancelled' then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PERSIST', KEYS[1])
local idx = redis.call('HGET', KEYS[1], 'group_index')
if idx and idx ~= '' and redis.call('HDEL', KEYS[7], idx) == 1 then
  redis.call('HINCRBY', KEYS[6], 'done', -1)
  redis.call('PERSIST', KEYS[6])
  redis.call('PERSIST', KEYS[7])
  local cb_state = redis.call('HGET', KEYS[8], 'state')
  if cb_state == 'complete' or cb_state == 'failed' or cb_state == 'dead'
      or cb_state == 'cancelled' or cb_state == 'over_budget' then
    redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[8], 'id'))
    redis.call('PERSIST', KEYS[8])
    redis.call('HSET', KEYS[8], 'state', 'waiting', 'attempt', 0, 'cancel', 0)
    redis.call('HDEL', KEYS[8], 'finished_ms', 'result')
  end
end
redis.call('HSET', KEYS[1], 'attempt', 0, 'cancel', 0, 'requeued_ms', now_ms())
redis.call('HDEL', KEYS[1], 'finished_ms', 'result')
make_ready(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[1], {requeued = '1'})
return 1
