-- uses: _lib
-- Create a job, or return the existing one for an idempotency key seen within its TTL.
-- KEYS[1] job hash          KEYS[2] queue zset       KEYS[3] delayed zset
-- KEYS[4] idempotency key   KEYS[5] sequence counter KEYS[6] events stream
-- KEYS[7] wake list         KEYS[8] set of queue names
-- KEYS[9] the idempotency key under its name before it was a digest (Keys.idempotency_by_key;
--   read, never written: one set by an earlier version still returns its job until it expires)
-- ARGV[1] job id            ARGV[2] idempotency TTL s (0: no key)
-- ARGV[3] run-at ms (0: now) ARGV[4] priority 0-9 (9 runs first)
-- ARGV[5] initial state: queued | waiting (a chord callback held until its group is done)
-- ARGV[6] events maxlen     ARGV[7] queue name       ARGV[8] JSON object of job fields
--   (each value within hash-max-listpack-value: pipeline/queue/record.py)
-- ARGV[9] delay ms from now (0: none), measured on the Redis clock like every other time
-- ARGV[10] replaced job id ('' for none): the idempotency key may be taken over from that job
--   (one that ended without a result); a key naming any other job still returns that job
-- KEYS[10] idle workers zset (worker id -> registration deadline ms; idle.lua)
-- KEYS[11] idle workers hash (worker id -> JSON {wake, queues, min_lease_ms, defs})
-- KEYS[12] active zset   KEYS[13] fence counter
-- ARGV[11] first lease ms of a hand-off   ARGV[12] a nonce for a hand-off's fencing token
-- A job that can start now, in a queue with nothing ahead of it, goes straight to an idle
-- worker serving its queue when one is registered (pipeline/queue/handoff.py): claimed for
-- it here (_lib claim_job, exactly as claim.lua would, with that worker's definitions) and
-- pushed, as a JSON object of its hash, onto the worker's own wake list, which it is blocked
-- on. The wake list's name is one the worker wrote with its registration (Keys.worker_wake:
-- the same hash tag as every key here); registrations are only made outside a Cluster.
-- Returns {1, id} when created, {0, existing id} for a known idempotency key or job id (a
-- client retrying an enqueue whose reply a failover lost must not reset a job that ran).
local id = ARGV[1]

-- An idle worker serving this queue, removed from the idle set (one hand-off per
-- registration), or nil. Registrations past their deadline (a worker that died idle) go.
local function take_idle_worker(now)
  if redis.call('ZCARD', KEYS[10]) == 0 then return nil end
  local gone = redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', now)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now)
    redis.call('HDEL', KEYS[11], unpack(gone))
  end
  for _, worker in ipairs(redis.call('ZRANGE', KEYS[10], 0, 15)) do
    local raw = redis.call('HGET', KEYS[11], worker)
    local info = raw and cjson.decode(raw)
    if info then
      for _, q in ipairs(info.queues) do
        if q == ARGV[7] then
          redis.call('ZREM', KEYS[10], worker)
          redis.call('HDEL', KEYS[11], worker)
          return worker, info
        end
      end
    end
  end
  return nil
end

local function hand_off(now)
  if redis.call('ZCARD', KEYS[2]) > 0 then return false end  -- jobs ahead go first
  local worker, info = take_idle_worker(now)
  if not worker then return false end
  redis.call('HSET', KEYS[1], 'state', 'queued')
  emit(KEYS[6], ARGV[6], KEYS[1], id, 'queued', nil)
  claim_job(KEYS[1], id, worker, info.min_lease_ms, info.defs, ARGV[12], KEYS[12], KEYS[13],
    KEYS[6], ARGV[6], now, tonumber(ARGV[11]))
  local flat, record = redis.call('HGETALL', KEYS[1]), {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  local wake = info.wake
  redis.call('LPUSH', wake, cjson.encode(record))
  redis.call('PEXPIRE', wake, 60000)
  return true
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, id} end
if ARGV[2] ~= '0' then
  local existing = redis.call('GET', KEYS[4]) or redis.call('GET', KEYS[9])
  if existing and existing ~= ARGV[10] then return {0, existing} end
  redis.call('SET', KEYS[4], id, 'EX', ARGV[2])
end
local now = now_ms()
local seq = redis.call('INCR', KEYS[5])
local score = (9 - tonumber(ARGV[4])) * 1e12 + seq
local fields = cjson.decode(ARGV[8])
local args = {'HSET', KEYS[1]}
for k, v in pairs(fields) do
  table.insert(args, k)
  table.insert(args, tostring(v))
end
redis.call(unpack(args))
redis.call('HSET', KEYS[1], 'id', id, 'score', string.format('%.0f', score), 'attempt', 0,
  'created_ms', now, 'cancel', 0)
redis.call('SADD', KEYS[8], ARGV[7])
local run_at = tonumber(ARGV[3])
if tonumber(ARGV[9]) > 0 then run_at = math.max(run_at, now + tonumber(ARGV[9])) end
redis.call('HSET', KEYS[1], 'enqueued_ms', now)
if ARGV[5] == 'waiting' then
  redis.call('HSET', KEYS[1], 'state', 'waiting')
  emit(KEYS[6], ARGV[6], KEYS[1], id, 'waiting', nil)
elseif run_at > now then
  redis.call('ZADD', KEYS[3], run_at, id)
  redis.call('HSET', KEYS[1], 'state', 'scheduled', 'run_at_ms', run_at)
  emit(KEYS[6], ARGV[6], KEYS[1], id, 'scheduled', nil)
elseif not hand_off(now) then
  make_ready(KEYS[1], KEYS[2], KEYS[7], KEYS[6], ARGV[6], id, nil)
end
return {1, id}
