-- The one clock every script reads: Redis TIME in milliseconds, never a client's clock, so
-- leases, holds and buckets agree across machines whose clocks drift.
-- Prepended by pipeline/redis/scripts.py to scripts whose header says `-- uses: clock`.
-- Redis < 5 replicates scripts verbatim, which refuses writes after TIME; effects
-- replication makes TIME safe there too (a no-op on newer servers).
if redis.replicate_commands then redis.replicate_commands() end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
