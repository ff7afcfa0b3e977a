-- Raise the settled spend of budget scopes to at least what the ledger (the book of record)
-- says was spent, e.g. after Redis lost its data. Never lowers it: spend Redis booked that
-- the ledger has not seen yet (a buffered write, a call settling right now) stays.
-- KEYS[n]          totals hash of scope n (n = 1..N)
-- ARGV[2n-1]       the ledger's spend for scope n, nano-dollars (integer)
-- ARGV[2n]         key ttl_s of scope n
-- Returns the number of scopes raised.
local raised = 0
for n = 1, #KEYS do
  local floor = tonumber(ARGV[2 * n - 1])
  local spent = tonumber(redis.call('HGET', KEYS[n], 'spent') or '0')
  if spent < floor then
    redis.call('HINCRBY', KEYS[n], 'spent', floor - spent)
    redis.call('EXPIRE', KEYS[n], tonumber(ARGV[2 * n]))
    raised = raised + 1
  end
end
return raised
