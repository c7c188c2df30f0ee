-- heartbeat.lua: an instance is alive (see hot/journal.c). KEYS[1] its heartbeat key, KEYS[2] the set of
-- instances; ARGV[1] its id, ARGV[2] how long the heartbeat lasts (ms).
-- Returns 1 when the heartbeat had lapsed or the id was not listed (a survivor may have recovered this
-- instance's journal meanwhile), else 0.
local lapsed = redis.call('EXISTS', KEYS[1]) == 0
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local added = redis.call('SADD', KEYS[2], ARGV[1]) == 1
return (lapsed or added) and 1 or 0
