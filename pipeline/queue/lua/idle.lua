-- uses: clock
-- Register a worker as idle, for hand-offs (pipeline/queue/handoff.py): sent in one pipeline
-- with the blocking pop that waits for them, by a worker with a free slot, no admission gate
-- and no replica to wait for. enqueue.lua takes the registration with the job it hands over
-- (one job per registration); the worker removes it itself when woken otherwise.
-- KEYS[1] idle workers zset (worker id -> registration deadline ms)
-- KEYS[2] idle workers hash (worker id -> ARGV[3])
-- ARGV[1] worker id   ARGV[2] how long the registration stands, ms (a worker that dies idle
--   is handed jobs for at most that long; each comes back when its first lease runs out)
-- ARGV[3] JSON {wake: the worker's own wake list, queues: [names], min_lease_ms,
--   defs: {task name: {expected_s, timeout_s, max_attempts, retry_delays_s}} as claim.lua's}
-- Returns 1.
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
