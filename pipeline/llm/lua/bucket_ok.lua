--[[ Learn from a success: raise the AIMD factor a little (additive increase) and end back-off.

KEYS[1]  bucket hash (see bucket.lua)
ARGV[1]  additive increase per success (the factor never exceeds 1: the setting is the ceiling)

Does nothing for a bucket that was never used. Returns the factor.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return '1' end
local h = redis.call('HMGET', KEYS[1], 'f', 'bo')
local f = tonumber(h[1]) or 1
if f < 1 then
  f = math.min(1, f + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'f', tostring(f))
end
if (tonumber(h[2]) or 0) > 0 then redis.call('HSET', KEYS[1], 'bo', '0') end
return tostring(f)
