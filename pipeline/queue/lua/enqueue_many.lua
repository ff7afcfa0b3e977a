-- uses: _create
-- Create many jobs in one call, each exactly as enqueue.lua would create it, in order (a job
-- sees the jobs before it: an idempotency key used earlier in the call returns that job);
-- what creating a job does is _create.lua's create_job. Every job is `queued` (run now or
-- at its run-at), none takes over a key. The client sends at most SCRIPT_JOBS jobs per call
-- (pipeline/queue/enqueue_args.py), so a call holds Redis for a few milliseconds at most.
-- KEYS[1] delayed zset      KEYS[2] sequence counter  KEYS[3] events stream
-- KEYS[4] set of queue names  KEYS[5] idle workers zset  KEYS[6] idle workers hash
-- KEYS[7] active zset       KEYS[8] fence counter
-- KEYS[9 ..] for each queue q = 1..ARGV[4]: its zset, then its wake list
-- then for each job, 3 keys: its hash, its idempotency key (by digest), the same key under its
--   name before it was a digest (Keys.idempotency_by_key); both placeholders without a key
-- ARGV[1] events maxlen     ARGV[2] first lease ms of a hand-off
-- ARGV[3] the hand-off nonces: 8 hex digits per job, in order
-- ARGV[4] the number of queues  ARGV[5] the number of shapes (pipeline/queue/enqueue_args.py:
--   what the jobs of one task with equal options share)
-- then for each shape: queue name, queue number (1..ARGV[4]), priority 0-9, idempotency TTL s
--   (0: no key), run-at ms (0: now), delay ms from now (0: none), n, then n strings: fields
--   the shape's jobs share, name, value, name, value, ...
-- then for each job: id, shape number (1..ARGV[5]), n, then n strings: its own fields
-- Returns {created, id, created, id, ...}: per job 1 and its id when created, 0 and the
-- existing id for a known idempotency key or job id.
local ctx = {delayed = KEYS[1], seq = KEYS[2], events = KEYS[3], queues = KEYS[4],
  idle = KEYS[5], idle_workers = KEYS[6], active = KEYS[7], fence = KEYS[8],
  maxlen = ARGV[1], first_lease_ms = tonumber(ARGV[2]), now = now_ms(), listed = {},
  ready = {}}
local nonces, a, shapes = ARGV[3], 6, {}
for s = 1, tonumber(ARGV[5]) do
  local q, count = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 6])
  shapes[s] = {queue = ARGV[a], queue_key = KEYS[7 + 2 * q], wake_key = KEYS[8 + 2 * q],
    priority = ARGV[a + 2], ttl = ARGV[a + 3], run_at = ARGV[a + 4], delay_ms = ARGV[a + 5],
    fields = {unpack(ARGV, a + 7, a + 6 + count)}}
  a = a + 7 + count
end
local out, k, n, last = {}, 9 + 2 * tonumber(ARGV[4]), 0, #ARGV
while a <= last do
  n = n + 1
  local shape, count = shapes[tonumber(ARGV[a + 1])], tonumber(ARGV[a + 2])
  local fields = {unpack(shape.fields)}
  for i = a + 3, a + 2 + count do fields[#fields + 1] = ARGV[i] end
  local created, id = create_job(ctx, {key = KEYS[k], idem_key = KEYS[k + 1],
    legacy_key = KEYS[k + 2], queue_key = shape.queue_key, wake_key = shape.wake_key,
    queue = shape.queue, id = ARGV[a], ttl = shape.ttl, run_at = shape.run_at,
    priority = shape.priority, delay_ms = shape.delay_ms, state = 'queued', replaced = '',
    nonce = string.sub(nonces, 8 * n - 7, 8 * n), fields = fields})
  out[2 * n - 1], out[2 * n] = created, id
  a, k = a + 3 + count, k + 3
end
return out
