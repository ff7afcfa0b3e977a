-- uses: clock
-- Shared by the budget scripts whose header says `-- uses: _lib` (the loader prepends it).
-- Lets lapsed holds go: a dead worker's reservation comes back after its hold time.
local now = now_ms()

local function sweep(totals, holds)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  for _, member in ipairs(expired) do
    local held = redis.call('HGET', totals, 'h:' .. member)
    if held then
      redis.call('HINCRBY', totals, 'reserved', -tonumber(held))
      redis.call('HDEL', totals, 'h:' .. member)
    end
    redis.call('ZREM', holds, member)
  end
end
