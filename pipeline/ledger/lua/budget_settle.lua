-- Settle (the call ran: book its real cost) or cancel (it never went out) a reservation.
-- Money is integer nano-dollars. A token settles or cancels at most once; a second call
-- is a no-op, so a retried settle cannot double-count. A hold that already lapsed is
-- still booked as spent on settle, because the call did happen.
-- A cost above the reserved amount (an overrun: the bound did not hold) is booked in full
-- and stops every scope that has a limit: `stopped` = that limit, `overrun` += the excess;
-- budget_reserve.lua admits nothing there until the limit is raised above it.
--
-- KEYS[1]          the token's state key (held | settled | cancelled)
-- KEYS[2n], [2n+1] totals hash and holds zset of scope n (n = 1..N)
-- ARGV[1]          token
-- ARGV[2]          'settle' or 'cancel'
-- ARGV[3]          actual cost in nano-dollars (integer; ignored for cancel)
-- ARGV[4]          state_ttl_s for the token state key
-- ARGV[4+n]        key ttl_s of scope n
-- ARGV[5+N]        the reserved amount in nano-dollars (what the call was allowed to cost)
-- Returns 1 if applied, 2 if applied and it was an overrun, 0 if the token was already
-- settled or cancelled.
local state = redis.call('GET', KEYS[1])
if state == 'settled' or state == 'cancelled' then
  return 0
end

local token = ARGV[1]
local settle = ARGV[2] == 'settle'
local actual = tonumber(ARGV[3])
local scopes = (#KEYS - 1) / 2
local reserved_amount = tonumber(ARGV[5 + scopes] or '-1')
local overrun = settle and reserved_amount >= 0 and actual > reserved_amount

for n = 1, scopes do
  local totals, holds = KEYS[2 * n], KEYS[2 * n + 1]
  local held = redis.call('HGET', totals, 'h:' .. token)
  if held then
    redis.call('HINCRBY', totals, 'reserved', -tonumber(held))
    redis.call('HDEL', totals, 'h:' .. token)
  end
  redis.call('ZREM', holds, token)
  if settle then
    redis.call('HINCRBY', totals, 'spent', actual)
    if overrun then
      redis.call('HINCRBY', totals, 'overrun', actual - reserved_amount)
      local limit = tonumber(redis.call('HGET', totals, 'limit') or '-1')
      if limit >= 0 then
        redis.call('HSET', totals, 'stopped', tostring(limit))
      end
    end
    redis.call('EXPIRE', totals, tonumber(ARGV[4 + n]))
  end
end
redis.call('SET', KEYS[1], settle and 'settled' or 'cancelled', 'EX', tonumber(ARGV[4]))
if overrun then
  return 2
end
return 1
