-- uses: clock
-- Push back the expiry of a hold whose call is still running, so a slow call (or a long
-- wait before it) never lets its reservation lapse while it may still be billed.
-- Only a hold that is still there is extended: a lapsed or closed one is not brought back
-- (its amount may already have been reserved by someone else).
--
-- KEYS[1]          the token's state key (held | settled | cancelled | abandoned:<n>)
-- KEYS[2]          the job's holds index (not touched here; the key layout is the budget's)
-- KEYS[2n+1], [2n+2]  totals hash and holds zset of scope n (n = 1..N)
-- ARGV[1]          token
-- ARGV[2]          hold_ms: the hold now lasts this long from Redis TIME
-- ARGV[3]          state_ttl_s for the token state key
-- Returns the number of scopes whose hold was extended (0: lapsed or already closed).
if redis.call('GET', KEYS[1]) ~= 'held' then
  return 0
end
local now = now_ms()
local until_ms = now + tonumber(ARGV[2])
local extended = 0
for n = 1, (#KEYS - 2) / 2 do
  local holds = KEYS[2 * n + 2]
  local expiry = redis.call('ZSCORE', holds, ARGV[1])
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', holds, 'XX', until_ms, ARGV[1])
    extended = extended + 1
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return extended
