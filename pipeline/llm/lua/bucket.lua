--[[ Take one request and `n` input tokens from a model's shared limits, or say how long to wait.

Algorithm: a sliding window log of requests (what the provider counts: at most `limit`
requests in any window of the period plus a margin, each stamped when it went on the wire),
a token bucket per dimension (input tokens; and requests, there only to smooth bursts),
refilled continuously by elapsed Redis TIME (never a client clock), plus a per-day request
counter that resets at midnight America/Los_Angeles, a shared pause (429 RetryInfo /
back-off), a per-day "exhausted" mark, and a cap on concurrent calls kept as leases in a
sorted set. Rates, capacities and the window's count arrive at full speed; the AIMD factor
`f` stored in the hash scales them, with floors that guarantee progress (see limiter.py):
the window's count and the request capacity are never below one whole request and the
request refill never below ARGV[15], whatever f.

KEYS[1]  bucket hash: rq, tk (levels), ts (last refill, ms), f (AIMD factor 0..1),
         pause (paused until, ms), dayend (ms), dayn (requests today), dayx (daily quota
         exhausted until, ms), bo (back-off s), lastdec (ms of last decrease)
KEYS[2]  leases zset: permit id -> lease expiry (ms)
KEYS[3]  window zset: permit id -> when its request went on the wire (ms), or, until it has,
         grant time + ARGV[19] ("not sent yet": counted, and gone one window after that
         if its worker died before sending or releasing)

ARGV[1]  request capacity (burst) at f = 1
ARGV[2]  request refill rate per ms at f = 1
ARGV[3]  token capacity at f = 1
ARGV[4]  token refill rate per ms at f = 1
ARGV[5]  requests per day
ARGV[6]  max concurrent calls
ARGV[7]  input tokens wanted (n)
ARGV[8]  permit id
ARGV[9]  lease length, ms
ARGV[10..12] three consecutive Pacific midnights (ms), the first at or before "today"
ARGV[13] how soon to look again when only the concurrency cap blocks, ms
ARGV[14] TTL of both keys, ms
ARGV[15] least request refill per ms, at any f (one request per period + safety margin)
ARGV[16] clock offset, ms, added to Redis TIME (0 in production; tests step time with it)
ARGV[17] requests allowed in one window at f = 1 (the provider's limit; at f:
         max(1, floor(limit x f)))
ARGV[18] window length, ms (the provider's period plus a margin for the send-to-count delay)
ARGV[19] how long a granted, not yet sent request is held in the window before its grant
         is treated as sent, ms

Returns {1, now_ms, lease_until_ms} when granted, else
        {0, wait_ms, reason, until_ms} with reason one of
        daily | daily_count | paused | concurrency | window | requests | tokens.
Numbers go back as strings: Redis would truncate Lua floats to integers.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[16])

local req_cap = tonumber(ARGV[1])
local req_rate = tonumber(ARGV[2])
local tok_cap = tonumber(ARGV[3])
local tok_rate = tonumber(ARGV[4])
local rpd = tonumber(ARGV[5])
local max_conc = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local lease_ms = tonumber(ARGV[9])
local poll_ms = tonumber(ARGV[13])
local ttl_ms = tonumber(ARGV[14])

local h = redis.call('HMGET', KEYS[1], 'rq', 'tk', 'ts', 'f', 'pause', 'dayend', 'dayn', 'dayx')
local f = tonumber(h[4]) or 1
-- A bucket that holds less than one request can never grant one, and a refill scaled to
-- nothing never fills it: both floors keep a model live after any number of 429s.
local rq_cap = math.max(1, req_cap * f)
local rq_rate = math.max(req_rate * f, tonumber(ARGV[15]))
local tk_cap = tok_cap * f
local tk_rate = tok_rate * f
local rq, tk
if h[3] then
  local dt = math.max(0, now - tonumber(h[3]))
  rq = math.min(rq_cap, tonumber(h[1]) + dt * rq_rate)
  tk = math.min(tk_cap, tonumber(h[2]) + dt * tk_rate)
else
  rq = rq_cap
  tk = tk_cap
end
local pause = tonumber(h[5]) or 0
local dayend = tonumber(h[6]) or 0
local dayn = tonumber(h[7]) or 0
local dayx = tonumber(h[8]) or 0

if now >= dayend then
  dayn = 0
  dayend = 0
  for i = 10, 12 do
    local m = tonumber(ARGV[i])
    if m > now then dayend = m; break end
  end
  if dayend == 0 then dayend = now + 86400000 end
end

local function save()
  redis.call('HSET', KEYS[1], 'rq', tostring(rq), 'tk', tostring(tk), 'ts', tostring(now),
    'f', tostring(f), 'dayend', tostring(dayend), 'dayn', tostring(dayn))
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end

local function wait(ms, reason, untl)
  save()
  return {0, tostring(math.max(1, math.ceil(ms))), reason, tostring(untl)}
end

if dayx > now then return wait(dayx - now, 'daily', dayx) end
if dayn >= rpd then return wait(dayend - now, 'daily_count', dayend) end
if pause > now then return wait(pause - now, 'paused', pause) end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= max_conc then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local ms = math.min(poll_ms, tonumber(first[2]) - now)
  return wait(ms, 'concurrency', now + ms)
end

-- The provider's window: at most win_n requests stamped within the last win_ms. A stamp in
-- the future is a grant not sent yet; it frees nothing until it is stamped, so look again soon.
local win_n = math.max(1, math.floor(tonumber(ARGV[17]) * f))
local win_ms = tonumber(ARGV[18])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - win_ms)
local used = redis.call('ZCARD', KEYS[3])
if used >= win_n then
  local e = redis.call('ZRANGE', KEYS[3], used - win_n, used - win_n, 'WITHSCORES')
  local at = tonumber(e[2])
  local ms = at + win_ms - now
  if at > now then ms = poll_ms end
  return wait(ms, 'window', now + ms)
end

-- A request larger than the token burst waits for a full bucket and then leaves it in debt.
local need_tok = math.min(n, tk_cap)
local wait_ms, reason = 0, ''
if rq < 1 then
  wait_ms = (1 - rq) / rq_rate
  reason = 'requests'
end
if tk < need_tok then
  local w = (need_tok - tk) / tk_rate
  if w > wait_ms then wait_ms = w; reason = 'tokens' end
end
if wait_ms > 0 then return wait(wait_ms, reason, now + wait_ms) end

rq = rq - 1
tk = tk - n
dayn = dayn + 1
save()
redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[8])
redis.call('PEXPIRE', KEYS[2], ttl_ms)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[19]), ARGV[8])
redis.call('PEXPIRE', KEYS[3], ttl_ms)
return {1, tostring(now), tostring(now + lease_ms)}
