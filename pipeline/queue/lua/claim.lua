-- uses: _lib
-- Claim queued jobs for a worker's free slots: the only way a job becomes active.
-- The worker names the jobs it saw at the head of the queue (one per free slot, and only
-- one when an admission gate has to see each job first).
-- Each claimed job is resolved against the claiming worker's own task definitions (_lib
-- claim_job: the caller's explicit options win, else the worker's definition, else the
-- minimum lease and one attempt for a task the worker does not know; it fails it as unknown).
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
    claim_job(job, id, ARGV[1], ARGV[2], defs, ARGV[6], KEYS[2], KEYS[3], KEYS[4], ARGV[3], now)
    out[#out + 1] = redis.call('HGETALL', job)
  elseif now_state[1] == 'active' and now_state[2] == ARGV[1] and now_state[3]
      and string.sub(now_state[3], -#suffix) == suffix then
    out[#out + 1] = redis.call('HGETALL', job)  -- this very claim, retried after a lost reply
  else
    out[#out + 1] = false
  end
end
return out
