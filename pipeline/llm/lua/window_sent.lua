--[[ Stamp a granted request with the moment it went on the wire (its body fully written).

KEYS[1]  window zset (see bucket.lua)
ARGV[1]  permit id
ARGV[2]  clock offset, ms, added to Redis TIME (0 in production; see bucket.lua)
ARGV[3]  TTL of the window key, ms

The provider counts a request when it arrives, so the window counts it from here, not from
its grant (the grant can precede the send by a claim, a job's start and a body's encoding,
which vary: stamped at grant, a request granted early and sent late met the next one inside
the provider's window). Stamped after the send, the stamp is later than the departure, never
earlier. Always written (not XX): a request on the wire is counted even if its grant mark
had lapsed. Returns the stamp (ms, a string).
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return tostring(now)
