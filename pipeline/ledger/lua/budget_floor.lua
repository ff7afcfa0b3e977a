-- uses: _lib
-- Raise the settled spend of budget scopes to at least what the ledger (the book of record)
-- says was spent, e.g. after Redis lost its data, counting each call once
-- (pipeline/ledger/floor.py). Never lowers it: spend Redis booked that the ledger has not
-- seen yet (a buffered write) stays.
--
-- The ledger's figure for a scope counts every call's cost; each call given here (a recent
-- one whose token is still open or may be corrected) counts by its token's state instead:
--   held, hold still open  0: the hold's close books it (counting it here booked it twice);
--                          open = any of its scopes here still holds it
--   held, hold lapsed      (no scope here holds it) its ledger cost, booked here; the token
--                          is marked as below
--   abandoned:<n>          n, as booked: a settle or cancel still corrects it from n
--   settled, cancelled     its ledger cost: closed, nothing more is booked for it
--   no state               its ledger cost, booked here; the token is marked as below
-- A token booked here is marked settled when its ledger row is final, else
-- abandoned:<cost> (an abandoned or still running row: a settle that still arrives corrects
-- the booking to its true cost instead of adding it; budget_settle.lua).
--
-- KEYS[2n-1], KEYS[2n]   totals hash and holds zset of scope n (n = 1..N)
-- KEYS[2N+m]             the state key of call m (m = 1..M)
-- ARGV[1]                N, the number of scopes
-- ARGV[2]                state_ttl_s for a token state written here
-- ARGV[1+2n], ARGV[2+2n] the ledger's spend for scope n (nano-dollars), key ttl_s of scope n
-- ARGV[3+2N+4(m-1)] ..   call m: token, ledger cost (nano-dollars), '1' when its ledger row
--                        is final else '0', its scopes as indexes n joined by ',' ("1,2,3")
-- Returns the number of scopes raised.
local scopes = tonumber(ARGV[1])
local state_ttl = tonumber(ARGV[2])
local floors = {}
for n = 1, scopes do
  sweep(KEYS[2 * n - 1], KEYS[2 * n])
  floors[n] = tonumber(ARGV[1 + 2 * n])
end

local base = 3 + 2 * scopes
local calls = (#ARGV - base + 1) / 4
for m = 1, calls do
  local at = base + 4 * (m - 1)
  local token, cost, final = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local in_scopes = {}
  for n in string.gmatch(ARGV[at + 3], '%d+') do
    table.insert(in_scopes, tonumber(n))
  end
  local state_key = KEYS[2 * scopes + m]
  local state = redis.call('GET', state_key)
  local figure = cost
  local mark = false
  if state == 'held' then
    -- Open while any of its scopes still holds it (lapsed holds were swept above, in
    -- every scope alike: a reservation's scopes share one expiry). A scope lacking the
    -- entry is not a lapse: the ledger may name a scope the hold is not in (a row whose
    -- day differs from its reservation's); marking the token then refused the real
    -- settle, and the hold's own scope lost the call's cost.
    figure = cost  -- lapsed: nobody is left to close it
    mark = true
    for _, n in ipairs(in_scopes) do
      if redis.call('HEXISTS', KEYS[2 * n - 1], 'h:' .. token) == 1 then
        figure = 0
        mark = false
      end
    end
  elseif state and string.sub(state, 1, 10) == 'abandoned:' then
    figure = tonumber(string.sub(state, 11))
  elseif not state then
    mark = true
  end
  if mark then
    local mark_as = final == '1' and 'settled' or ('abandoned:' .. ARGV[at + 1])
    redis.call('SET', state_key, mark_as, 'EX', state_ttl)
  end
  for _, n in ipairs(in_scopes) do
    floors[n] = floors[n] + figure - cost
  end
end

local raised = 0
for n = 1, scopes do
  local totals = KEYS[2 * n - 1]
  local spent = tonumber(redis.call('HGET', totals, 'spent') or '0')
  if spent < floors[n] then
    redis.call('HINCRBY', totals, 'spent', floors[n] - spent)
    redis.call('EXPIRE', totals, tonumber(ARGV[2 + 2 * n]))
    raised = raised + 1
  end
end
return raised
