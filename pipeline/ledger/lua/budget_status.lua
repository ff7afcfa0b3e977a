-- uses: _lib
-- Read spent and reserved of budget scopes, first letting lapsed holds go.
-- KEYS[2n-1], KEYS[2n]  totals hash and holds zset of scope n (n = 1..N)
-- Returns {spent_1, reserved_1, limit_1, stopped_1, spent_2, ...} as integer nano-dollar
-- strings; limit is the one in force at the last reservation, '-1' for none or never
-- reserved; stopped is the limit at which an overrun stopped the scope, '-1' when it runs.
local out = {}
for n = 1, #KEYS / 2 do
  local totals, holds = KEYS[2 * n - 1], KEYS[2 * n]
  sweep(totals, holds)
  table.insert(out, redis.call('HGET', totals, 'spent') or '0')
  table.insert(out, redis.call('HGET', totals, 'reserved') or '0')
  table.insert(out, redis.call('HGET', totals, 'limit') or '-1')
  table.insert(out, redis.call('HGET', totals, 'stopped') or '-1')
end
return out
