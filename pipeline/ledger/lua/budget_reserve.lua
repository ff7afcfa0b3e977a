-- uses: _lib
-- Reserve a call's bound (its worst-case cost) against every budget that applies, all or
-- nothing. Money is integer nano-dollars. Each budget scope (batch, day, month) is two keys:
-- a totals hash {spent, reserved, limit (-1 = none), h:<token> = held amount,
-- stopped = the limit in force when a bill passed its hold (an overrun),
-- raised = a limit a person set above the one calls carry} and a zset of holds scored by
-- expiry (ms, server time), so a dead worker's hold lapses and its amount comes back.
-- A stopped scope admits nothing until its limit is above `stopped` (a person raised it:
-- a larger limit passed in ARGV, or `raised`); then the stop is lifted.
--
-- A token names one call: reserving a token that holds already, or whose call was booked
-- (settled, abandoned:<n>), holds nothing more and succeeds (a retried reply, a Batch
-- Mode group reserved again for requests that carry that token); only a cancelled token
-- (nothing booked) may hold again.
--
-- KEYS[1]          the token's state key (held | settled | cancelled | abandoned:<n>)
-- KEYS[2]          the job's holds index (hash token -> JSON entry), written when ARGV[5] ~= ''
-- KEYS[2n+1], [2n+2]  totals hash and holds zset of scope n (n = 1..N)
-- ARGV[1]          token
-- ARGV[2]          amount to hold, nano-dollars (integer)
-- ARGV[3]          hold_ms: how long the hold lasts without a settle or cancel
-- ARGV[4]          state_ttl_s: how long the token state key (and the job's index) is kept
-- ARGV[5]          the job's index entry for this token (JSON), or '' for a call of no job
-- ARGV[4+2n], ARGV[5+2n]  limit of scope n in nano-dollars (-1 = no limit), key ttl_s of scope n
-- Returns {1} on success, or {0, n, spent, reserved, limit, why} for a scope that does not
-- fit: why = 1 when settled spend alone leaves no room (spent + amount > limit), 0 when only
-- other calls' holds are in the way (they may settle lower: worth waiting for), 2 when the
-- scope is stopped after an overrun (then a 7th element: the limit it stopped at, which a
-- new limit must pass). A scope with why = 2 or 1 is reported before one blocked by holds
-- alone.
local token = ARGV[1]
local state = redis.call('GET', KEYS[1])
if state and state ~= 'cancelled' then
  return {1}
end
local amount = tonumber(ARGV[2])
local hold_ms = tonumber(ARGV[3])
local scopes = (#KEYS - 2) / 2

local function effective_limit(totals, limit)
  if limit < 0 then
    return limit
  end
  local raised = tonumber(redis.call('HGET', totals, 'raised') or '-1')
  if raised > limit then
    return raised
  end
  return limit
end

local held_only = nil
local limits = {}
for n = 1, scopes do
  local totals, holds = KEYS[2 * n + 1], KEYS[2 * n + 2]
  sweep(totals, holds)
  local limit = effective_limit(totals, tonumber(ARGV[4 + 2 * n]))
  limits[n] = limit
  if limit >= 0 then
    local spent = tonumber(redis.call('HGET', totals, 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', totals, 'reserved') or '0')
    local stopped = redis.call('HGET', totals, 'stopped')
    if stopped and limit <= tonumber(stopped) then
      return {0, n, tostring(spent), tostring(reserved), tostring(limit), 2, stopped}
    end
    if spent + amount > limit then
      return {0, n, tostring(spent), tostring(reserved), tostring(limit), 1}
    end
    if spent + reserved + amount > limit and not held_only then
      held_only = {0, n, tostring(spent), tostring(reserved), tostring(limit), 0}
    end
  end
end
if held_only then
  return held_only
end

for n = 1, scopes do
  local totals, holds = KEYS[2 * n + 1], KEYS[2 * n + 2]
  local ttl_s = tonumber(ARGV[5 + 2 * n])
  redis.call('HDEL', totals, 'stopped')  -- admitted: any stop was lifted by a higher limit
  redis.call('HINCRBY', totals, 'reserved', amount)
  redis.call('HSET', totals, 'limit', tostring(limits[n]))
  redis.call('HSET', totals, 'h:' .. token, amount)
  redis.call('ZADD', holds, now + hold_ms, token)
  redis.call('EXPIRE', totals, ttl_s)
  redis.call('EXPIRE', holds, ttl_s)
end
redis.call('SET', KEYS[1], 'held', 'EX', tonumber(ARGV[4]))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], token, ARGV[5])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
return {1}
