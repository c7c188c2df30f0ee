-- balance.lua: the live balance of one owner, for the balance API. KEYS[1] the balance hash {b, r, m}.
-- ARGV[1] op: d (debit: only if available stays at or above the minimum), c (credit), m (set the minimum);
-- ARGV[2] amount (micro-units), ARGV[3] the rebuilt "balance:minimum" ("" = unknown).
-- Returns {status, balance, reserved, minimum}: status 1 done, 0 refused (debit below the minimum),
-- -1 missing (rebuild, then call again).
-- integers go to Redis as plain digits: Lua would write 1e+17, which HINCRBY refuses
local function I(x) return string.format('%.0f', x) end
local v = redis.call('HMGET', KEYS[1], 'b', 'r', 'm')
local b, r, m = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
if not b then
  if ARGV[3] == '' then return {-1, 0, 0, 0} end
  local ib, im = string.match(ARGV[3], '^(-?%d+):(-?%d+)$')
  b, r, m = tonumber(ib), 0, tonumber(im)
  redis.call('HSET', KEYS[1], 'b', I(b), 'r', 0, 'm', I(m))
end
local amt = tonumber(ARGV[2])
if ARGV[1] == 'd' then
  if b - r - amt < m then return {0, b, r, m} end
  b = redis.call('HINCRBY', KEYS[1], 'b', I(-amt))
elseif ARGV[1] == 'c' then
  b = redis.call('HINCRBY', KEYS[1], 'b', I(amt))
else
  m = amt
  redis.call('HSET', KEYS[1], 'm', I(m))
end
return {1, b, r, m}
