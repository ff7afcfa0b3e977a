-- Close a reservation: settle (the call ran: book its real cost), cancel (it never went
-- out), or abandon (its worker was lost mid-call: book the amount given, the call's worst
-- case or the ledger's figure for it, now rather than when the hold would lapse).
-- Money is integer nano-dollars. A held token closes once; settle or cancel after an
-- abandon corrects the booked amount to the real one (so a worker that was only cut off
-- from Redis, and finishes its call after all, leaves the true cost); anything else on a
-- closed token is a no-op, so a retried close cannot double-count. A hold that already
-- lapsed is still booked as spent on settle, because the call did happen, unless the
-- reconciler's floor booked it meanwhile (budget_floor.lua marks it settled, or
-- abandoned:<n> when its cost may still change: a settle then corrects it).
-- A cost above the reserved amount (an overrun: the bound did not hold) is booked in full
-- and stops every scope that has a limit: `stopped` = that limit, `overrun` += the excess;
-- budget_reserve.lua admits nothing there until the limit is raised above it.
--
-- KEYS[1]          the token's state key (held | settled | cancelled | abandoned:<n>)
-- KEYS[2]          the job's holds index (the token's entry is removed)
-- KEYS[2n+1], [2n+2]  totals hash and holds zset of scope n (n = 1..N)
-- ARGV[1]          token
-- ARGV[2]          'settle', 'cancel' or 'abandon'
-- ARGV[3]          nano-dollars (integer): the actual cost (settle) or the amount to book
--                  (abandon); ignored for cancel
-- ARGV[4]          state_ttl_s for the token state key
-- ARGV[4+n]        key ttl_s of scope n
-- ARGV[5+N]        the reserved amount in nano-dollars (what the call was allowed to cost)
-- Returns 1 if applied (or corrected), 2 if applied and it was an overrun, 0 if there was
-- nothing to do.
local state = redis.call('GET', KEYS[1])
if state == 'settled' or state == 'cancelled' then
  return 0
end

local token = ARGV[1]
local action = ARGV[2]
local amount = tonumber(ARGV[3])
local scopes = (#KEYS - 2) / 2
local reserved_amount = tonumber(ARGV[5 + scopes] or '-1')
local overrun = action == 'settle' and reserved_amount >= 0 and amount > reserved_amount

local function book(delta)
  for n = 1, scopes do
    local totals = KEYS[2 * n + 1]
    redis.call('HINCRBY', totals, 'spent', delta)
    if overrun then
      redis.call('HINCRBY', totals, 'overrun', amount - reserved_amount)
      local limit = tonumber(redis.call('HGET', totals, 'limit') or '-1')
      if limit >= 0 then
        redis.call('HSET', totals, 'stopped', tostring(limit))
      end
    end
    redis.call('EXPIRE', totals, tonumber(ARGV[4 + n]))
  end
end

local function done()
  if overrun then
    return 2
  end
  return 1
end

if state and string.sub(state, 1, 10) == 'abandoned:' then
  if action == 'abandon' then
    return 0
  end
  local booked = tonumber(string.sub(state, 11))
  local actual = 0
  if action == 'settle' then actual = amount end
  if actual ~= booked or overrun then book(actual - booked) end
  redis.call('SET', KEYS[1], action == 'settle' and 'settled' or 'cancelled',
    'EX', tonumber(ARGV[4]))
  redis.call('HDEL', KEYS[2], token)
  return done()
end

for n = 1, scopes do
  local totals, holds = KEYS[2 * n + 1], KEYS[2 * n + 2]
  local held = redis.call('HGET', totals, 'h:' .. token)
  if held then
    redis.call('HINCRBY', totals, 'reserved', -tonumber(held))
    redis.call('HDEL', totals, 'h:' .. token)
  end
  redis.call('ZREM', holds, token)
end
redis.call('HDEL', KEYS[2], token)
local next_state = 'cancelled'
if action == 'settle' then
  book(amount)
  next_state = 'settled'
elseif action == 'abandon' then
  book(amount)
  next_state = 'abandoned:' .. ARGV[3]
end
redis.call('SET', KEYS[1], next_state, 'EX', tonumber(ARGV[4]))
return done()
