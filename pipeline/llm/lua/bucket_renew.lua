--[[ Extend a running call's concurrency lease, so only a crashed worker's slot expires.

KEYS[1]  leases zset (see bucket.lua)
ARGV[1]  permit id
ARGV[2]  new lease length from now, ms
ARGV[3]  clock offset, ms, added to Redis TIME (0 in production; see bucket.lua)

Returns 1 if renewed, 0 if the lease had already expired (the slot may be in use again).
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[3])
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
