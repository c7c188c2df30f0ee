-- recover.lua: drop the live counters a stopped instance may have left out of step with PostgreSQL, so that
-- their next use rebuilds them from it (see hot/journal.c). KEYS[1] the instance's heartbeat, KEYS[2] its
-- journal (a sorted set of counter keys), KEYS[3] the set of instances. ARGV[1] its id, ARGV[2] how many keys
-- at most in this run (the caller repeats while the reply is positive, so one run never holds Redis long),
-- ARGV[3] '1' on the first run.
-- Returns -1 when the instance is alive after all, -2 when another survivor recovered it already, else how
-- many keys were dropped; 0 means done: the journal is gone and the instance no longer listed.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if ARGV[3] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return -2
end
local ks = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
if #ks == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 0
end
for i = 1, #ks do redis.call('DEL', ks[i]) end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #ks - 1)
return #ks
