-- balance.lua: the live balance of one owner, for the balance API. KEYS[1] the balance hash {b, r, m}.
-- ARGV[1] op: d (debit: only if available stays at or above the minimum), c (credit), m (set the minimum);
-- ARGV[2] amount (micro-units), ARGV[3] the rebuilt "balance:minimum:reserved" ("" = unknown).
-- Returns {status, balance, reserved, minimum}: status 1 done, 0 refused (debit below the minimum),
-- -1 missing (rebuild, then call again).
local v = redis.call('HMGET', KEYS[1], 'b', 'r', 'm')
local b, r, m
if not v[1] then
  if ARGV[3] == '' then return {-1, '0', '0', '0'} end
  local ib, im, ir = string.match(ARGV[3], '^(-?%d+):(-?%d+):(-?%d+)$')
  b, r, m = N(ib), N(ir), N(im)
  redis.call('HSET', KEYS[1], 'b', S(b), 'r', S(r), 'm', S(m))
else
  b, r, m = N(v[1]), N(v[2] or '0'), N(v[3] or '0')
end
local amt = N(ARGV[2])
if ARGV[1] == 'd' then
  if cmp(add(add(b, neg(r)), neg(amt)), m) < 0 then return {0, O(b), O(r), O(m)} end
  b = add(b, neg(amt))
  redis.call('HINCRBY', KEYS[1], 'b', S(neg(amt)))
elseif ARGV[1] == 'c' then
  b = add(b, amt)
  redis.call('HINCRBY', KEYS[1], 'b', ARGV[2])
else
  m = amt
  redis.call('HSET', KEYS[1], 'm', ARGV[2])
end
return {1, O(b), O(r), O(m)}
