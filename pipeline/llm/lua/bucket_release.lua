--[[ Give back a permit's concurrency slot and correct its token debit.

KEYS[1]  bucket hash (see bucket.lua)
KEYS[2]  leases zset (see bucket.lua)
KEYS[3]  window zset (see bucket.lua)

ARGV[1]  permit id
ARGV[2]  token correction: actual input tokens minus those debited (negative = refund)
ARGV[3]  1 to refund the request itself (the call was never sent), else 0
ARGV[4]  request capacity at f = 1
ARGV[5]  token capacity at f = 1
ARGV[6]  clock offset, ms, added to Redis TIME (0 in production; see bucket.lua)

A request never sent leaves the window. A sent one that was never stamped on the wire (a
provider without HTTP, or the stamp failed) is stamped now: it went out before its
release, so a stamp at release is late, never early, and a late stamp only holds quota
longer.

Levels never rise above capacity (for requests: max(1, capacity x f), as bucket.lua), so a
refund cannot create a burst beyond the bucket.
Returns 1 if the lease was still held, 0 if it had expired or was already given back.
]]
local held = redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[6])
  local at = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))
  if at and at > now then redis.call('ZADD', KEYS[3], 'XX', now, ARGV[1]) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return held end
local h = redis.call('HMGET', KEYS[1], 'rq', 'tk', 'f', 'dayn')
local f = tonumber(h[3]) or 1
local tk = math.min(tonumber(ARGV[5]) * f, (tonumber(h[2]) or 0) - tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'tk', tostring(tk))
if ARGV[3] == '1' then
  local rq = math.min(math.max(1, tonumber(ARGV[4]) * f), (tonumber(h[1]) or 0) + 1)
  local dayn = math.max(0, (tonumber(h[4]) or 0) - 1)
  redis.call('HSET', KEYS[1], 'rq', tostring(rq), 'dayn', tostring(dayn))
end
return held
