-- uses: _lib
-- Extend the leases of a worker's running jobs, fenced by each claim's token.
-- KEYS[1] active zset, KEYS[2..n+1] job hashes
-- ARGV: triples (job id, token, lease ms) in the order of KEYS[2..]
-- Returns one code per job: 1 renewed, 2 renewed but cancellation was requested,
-- 0 stale (the token no longer owns the job: stop working on it).
local now = now_ms()
local out = {}
for i = 2, #KEYS do
  local base = (i - 2) * 3
  local id, token, lease_ms = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local f = redis.call('HMGET', KEYS[i], 'state', 'token', 'cancel')
  if f[1] ~= 'active' or f[2] ~= token then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, id)
    redis.call('HSET', KEYS[i], 'lease_deadline_ms', now + lease_ms)
    out[#out + 1] = (f[3] == '1') and 2 or 1
  end
end
return out
