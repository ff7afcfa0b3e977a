-- A person raises a scope's limit: calls carry their own (lower) limit, so the raised one is
-- kept beside them and budget_reserve.lua uses the larger. A raise above the limit an overrun
-- stopped the scope at lifts the stop. Money is integer nano-dollars.
--
-- KEYS[1]  the scope's totals hash
-- ARGV[1]  the new limit in nano-dollars
-- ARGV[2]  key ttl_s of the scope
-- Returns the limit the scope was stopped at ('-1' when it was not stopped), as a string.
local raised = tonumber(ARGV[1])
local stopped = redis.call('HGET', KEYS[1], 'stopped')
redis.call('HSET', KEYS[1], 'raised', ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or '-1')
if limit >= 0 and raised > limit then
  redis.call('HSET', KEYS[1], 'limit', ARGV[1])
end
if stopped and raised > tonumber(stopped) then
  redis.call('HDEL', KEYS[1], 'stopped')
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return stopped or '-1'
