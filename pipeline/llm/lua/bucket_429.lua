--[[ Learn from a 429: pause every worker for this model and cut its rate (AIMD decrease).

KEYS[1]  bucket hash (see bucket.lua)

ARGV[1]  RetryInfo.retryDelay in ms, or -1 when the 429 carried none (then: exponential back-off)
ARGV[2]  1 for a per-day QuotaFailure, else 0
ARGV[3..5] three consecutive Pacific midnights (ms), the first at or before "today"
ARGV[6]  multiplicative decrease (e.g. 0.5)
ARGV[7]  floor for the factor (e.g. 0.1)
ARGV[8]  cooldown, ms: 429s closer together than this count as one event (workers that
         were already in flight all report the same overload)
ARGV[9]  first back-off, s
ARGV[10] largest back-off, s
ARGV[11] TTL of the key, ms
ARGV[12] clock offset, ms, added to Redis TIME (0 in production; see bucket.lua)

The bucket is emptied, so the first calls after the pause come at the refill rate rather
than as a burst. Returns {paused_until_ms, factor, daily_exhausted_until_ms} as strings.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[12])
local h = redis.call('HMGET', KEYS[1], 'f', 'pause', 'bo', 'lastdec', 'dayx')
local f = tonumber(h[1]) or 1
local pause = tonumber(h[2]) or 0
local bo = tonumber(h[3]) or 0
local lastdec = tonumber(h[4]) or 0
local dayx = tonumber(h[5]) or 0

if ARGV[2] == '1' then
  for i = 3, 5 do
    local m = tonumber(ARGV[i])
    if m > now then dayx = math.max(dayx, m); break end
  end
else
  local delay = tonumber(ARGV[1])
  local fresh = now - lastdec >= tonumber(ARGV[8])
  if delay < 0 then
    if fresh then
      if bo <= 0 then bo = tonumber(ARGV[9]) else bo = math.min(bo * 2, tonumber(ARGV[10])) end
    end
    delay = math.max(bo, 0) * 1000
  end
  pause = math.max(pause, now + delay)
  if fresh then
    f = math.max(tonumber(ARGV[7]), f * tonumber(ARGV[6]))
    lastdec = now
  end
end

redis.call('HSET', KEYS[1], 'f', tostring(f), 'pause', tostring(pause), 'bo', tostring(bo),
  'lastdec', tostring(lastdec), 'dayx', tostring(dayx), 'rq', '0', 'ts', tostring(now))
if redis.call('HEXISTS', KEYS[1], 'tk') == 0 then redis.call('HSET', KEYS[1], 'tk', '0') end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[11]))
return {tostring(pause), tostring(f), tostring(dayx)}
