-- Which of a worker's running jobs had their cancellation requested; reads only.
-- KEYS[1..n] job hashes
-- ARGV: none
-- Returns the positions (1-based, in KEYS) of the jobs whose `cancel` field is "1".
local out = {}
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'cancel') == '1' then
    out[#out + 1] = i
  end
end
return out
