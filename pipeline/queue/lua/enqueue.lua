-- uses: _create
-- Create a job, or return the existing one for its job id or for an idempotency key seen
-- within its TTL; what creating a job does is _create.lua's create_job (shared with
-- enqueue_many.lua), which also hands a job that can start now to an idle worker.
-- KEYS[1] job hash          KEYS[2] queue zset       KEYS[3] delayed zset
-- KEYS[4] idempotency key   KEYS[5] sequence counter KEYS[6] events stream
-- KEYS[7] wake list         KEYS[8] set of queue names
-- KEYS[9] the idempotency key under its name before it was a digest (Keys.idempotency_by_key)
-- KEYS[10] idle workers zset  KEYS[11] idle workers hash  KEYS[12] active zset
-- KEYS[13] fence counter
-- ARGV[1] job id            ARGV[2] idempotency TTL s (0: no key)
-- ARGV[3] run-at ms (0: now) ARGV[4] priority 0-9 (9 runs first)
-- ARGV[5] initial state: queued | waiting (a chord callback held until its group is done)
-- ARGV[6] events maxlen     ARGV[7] queue name
-- ARGV[8] delay ms from now (0: none), measured on the Redis clock like every other time
-- ARGV[9] replaced job id ('' for none): the idempotency key may be taken over from that job
--   (one that ended without a result); a key naming any other job still returns that job
-- ARGV[10] first lease ms of a hand-off   ARGV[11] a nonce for a hand-off's fencing token
-- ARGV[12..] the job's fields: name, value, name, value, ...
-- Returns {1, id} when created, {0, existing id} for a known idempotency key or job id.
local ctx = {delayed = KEYS[3], seq = KEYS[5], events = KEYS[6], queues = KEYS[8],
  idle = KEYS[10], idle_workers = KEYS[11], active = KEYS[12], fence = KEYS[13],
  maxlen = ARGV[6], first_lease_ms = tonumber(ARGV[10]), now = now_ms(), listed = {},
  ready = {}}
local created, id = create_job(ctx, {key = KEYS[1], queue_key = KEYS[2], wake_key = KEYS[7],
  idem_key = KEYS[4], legacy_key = KEYS[9], id = ARGV[1], ttl = ARGV[2], run_at = ARGV[3],
  priority = ARGV[4], state = ARGV[5], queue = ARGV[7], delay_ms = ARGV[8],
  replaced = ARGV[9], nonce = ARGV[11], fields = {unpack(ARGV, 12)}})
return {created, id}
