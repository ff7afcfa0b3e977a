-- Release a lock only if we still hold it (compare-and-delete).
-- KEYS[1]  the lock key
-- ARGV[1]  the token written when the lock was taken
-- Returns 1 if released, 0 if the lock had expired or belongs to someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
