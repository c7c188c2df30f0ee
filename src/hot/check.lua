-- check.lua: test every counter of one check, then consume all or nothing.
-- KEYS[1..n]: counter keys; when reserving KEYS[n+1] the reservation's hash (counter key → amount held),
-- KEYS[n+2] the tenant's expiry index (zset id → expiry), KEYS[n+3] the tenant's owner map (id → customer),
-- KEYS[n+4] the set of tenants holding reservations (for the worker), ARGV[6 + 6n + 1] the tenant.
-- ARGV[1] now_ms, ARGV[2] flags ("d" dry run, "r" reserve), ARGV[3] reservation expiry ms,
-- ARGV[4] reservation id, ARGV[5] its customer, ARGV[6] n, then 6 per counter: type, limit, amount, p1, p2, flags.
--   q  (quota)          p1 = ttl ms (0: none), p2 = rebuilt value ("" = unknown)
--   tb (token bucket)   limit = capacity, p1 = refill amount per window, p2 = window ms; the state is the
--                       bucket's level (what is used), draining at the refill rate: a limit raised or
--                       lowered applies to the level as it stands
--   sl (sliding log)    p1 = window ms
--   sw (sliding window, 100 sub-buckets) p1 = window ms
--   wf (workflow guard) amount = the check's priced cost, p1 = "calls:depth:duration ms:duplicates:cost" maxima
--                       (0 = none), p2 = "depth:tool|args_hash"; a tripped guard terminates the workflow for
--                       good (later calls: code 10 + the guard); flag k adds the cost to what it has spent
--   b  (balance gate)   amount = the check's priced cost, p1 = rebuilt "balance:minimum" ("" = unknown);
--                       fits while available (balance - reserved) is above the minimum and stays at or
--                       above it after the cost
-- flags: c consume when allowed, r reserve when allowed, e enforced (hard); m / l: the quota's meter keeps the
-- maximum / the latest value (usage is that value, not a sum)
-- Amounts are integers in micro-units. Returns {status, then 4 per counter: fits, a, b, c}:
--   status 1 allowed (and applied), 0 denied (nothing applied), -1 counters missing (then their indexes).
local now = tonumber(ARGV[1])
local dry = string.find(ARGV[2], 'd', 1, true) ~= nil
local n = tonumber(ARGV[6])
local st = {}
local missing = {}
local deny = false
local SUB = 100

local function tb_level(key, rate_amt, win)
  local v = redis.call('HMGET', key, 'l', 'ts')
  local l, ts = tonumber(v[1]), tonumber(v[2])
  if not l then return 0, now end
  if now > ts then
    l = l - math.floor((now - ts) * rate_amt / win)
    if l < 0 then l = 0 end
    ts = now
  end
  return l, ts
end

local function sw_state(key, win)
  local b = win / SUB
  local idx = math.floor(now / b)
  local v = redis.call('HMGET', key, 't', 'o')
  local total, oldest = tonumber(v[1]) or 0, tonumber(v[2]) or idx
  local drop = {}
  if idx - oldest > 2 * SUB then
    return 0, idx, {}, true
  end
  for j = oldest, idx - SUB - 1 do
    local c = tonumber(redis.call('HGET', key, 'b' .. j) or '0')
    total = total - c
    drop[#drop + 1] = 'b' .. j
  end
  local edge = idx - SUB
  local ec = tonumber(redis.call('HGET', key, 'b' .. edge) or '0')
  local f = ((edge + 1) * b - (now - win)) / b
  if f < 0 then f = 0 end
  local est = total - ec + math.floor(ec * f)
  return est, idx, drop, false, total, ec, b
end

for i = 1, n do
  local base = 6 + (i - 1) * 6
  local kind, limit, amt = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local p1, p2, fl = ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
  local key = KEYS[i]
  local s = {kind = kind, limit = limit, amt = amt, fl = fl, key = key,
             A = N(ARGV[base + 3]), L = N(ARGV[base + 2]), amt_s = ARGV[base + 3]}
  if kind == 'q' then
    if redis.call('EXISTS', key) == 0 then
      if p2 == '' then missing[#missing + 1] = i else s.init = p2; s.U = N(p2); s.R = N('0') end
    else
      local v = redis.call('HMGET', key, 'u', 'r')
      s.U, s.R = N(v[1] or '0'), N(v[2] or '0')
    end
    s.agg = string.find(fl, 'm', 1, true) and 'm' or (string.find(fl, 'l', 1, true) and 'l' or 's')
    if s.U then
      if s.agg == 'm' then s.fits = cmp(add(cmp(s.U, s.A) >= 0 and s.U or s.A, s.R), s.L) <= 0
      elseif s.agg == 'l' then s.fits = cmp(add(s.A, s.R), s.L) <= 0
      else s.fits = cmp(add(add(s.U, s.R), s.A), s.L) <= 0 end
    end
    s.ttl = tonumber(p1)
  elseif kind == 'tb' then
    s.win = tonumber(p2); s.rate = tonumber(p1)
    s.l, s.ts = tb_level(key, s.rate, s.win)
    s.fits = s.l + amt <= limit
  elseif kind == 'sl' then
    s.win = tonumber(p1)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - s.win)
    local es = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local used = 0
    for j = 1, #es, 2 do
      local a = tonumber(string.match(es[j], ':(%d+)$'))
      used = used + a
    end
    s.used = used; s.entries = es
    s.fits = used + amt <= limit
  elseif kind == 'wf' then
    local mc, md, mdur, mdup, mcost = string.match(p1, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    mc, md, mdur, mdup, mcost = tonumber(mc), tonumber(md), tonumber(mdur), tonumber(mdup), tonumber(mcost)
    local depth, tool = string.match(p2, '^(%d+):(.*)$')
    depth = tonumber(depth)
    s.dupf = 'd:' .. tool
    local v = redis.call('HMGET', key, 'n', 'f', 'c', 't', s.dupf)
    s.calls, s.first, s.spent, s.term = tonumber(v[1]) or 0, tonumber(v[2]), tonumber(v[3]) or 0, tonumber(v[4])
    local dups = tonumber(v[5]) or 0
    s.code = 0
    if s.term then s.code = 10 + s.term
    elseif mc > 0 and s.calls + 1 > mc then s.code = 1
    elseif mdup > 0 and dups + 1 > mdup then s.code = 2
    elseif md > 0 and depth > md then s.code = 3
    elseif mdur > 0 and s.first and now - s.first > mdur then s.code = 4
    elseif mcost > 0 and s.spent + amt > mcost then s.code = 5
    end
    s.fits = s.code == 0
    s.ttl = math.max(2 * mdur, 60000)
  elseif kind == 'b' then
    local v = redis.call('HMGET', key, 'b', 'r', 'm')
    if not v[1] then
      if p1 == '' then missing[#missing + 1] = i
      else
        local b, m = string.match(p1, '^(-?%d+):(-?%d+)$')
        s.init = true; s.B = N(b); s.M = N(m); s.R = N('0')
      end
    else
      s.B, s.R, s.M = N(v[1]), N(v[2] or '0'), N(v[3] or '0')
    end
    if s.B then
      local avail = add(s.B, neg(s.R))
      s.fits = cmp(avail, s.M) > 0 and cmp(add(avail, neg(s.A)), s.M) >= 0
    end
  else -- sw
    s.win = tonumber(p1)
    s.used, s.idx, s.drop, s.reset, s.total, s.ec, s.b = sw_state(key, s.win)
    s.fits = s.used + amt <= limit
  end
  if s.fits == false and string.find(fl, 'e', 1, true) then deny = true end
  st[i] = s
end

if #missing > 0 then
  local r = {-1}
  for _, i in ipairs(missing) do r[#r + 1] = i end
  return r
end

local apply = not deny and not dry
local reserving = apply and string.find(ARGV[2], 'r', 1, true) ~= nil
for i = 1, n do
  local s = st[i]
  local consume = apply and string.find(s.fl, 'c', 1, true) ~= nil
  local reserve = reserving and string.find(s.fl, 'r', 1, true) ~= nil
  if s.kind == 'q' then
    if s.init then
      redis.call('HSET', s.key, 'u', s.init, 'r', 0)
      if s.ttl > 0 then redis.call('PEXPIRE', s.key, s.ttl) end
    end
    if consume then
      if s.agg == 'm' then
        if cmp(s.A, s.U) > 0 then s.U = s.A; redis.call('HSET', s.key, 'u', s.amt_s) end
      elseif s.agg == 'l' then
        s.U = s.A
        redis.call('HSET', s.key, 'u', s.amt_s)
      else
        s.U = add(s.U, s.A)
        redis.call('HINCRBY', s.key, 'u', s.amt_s)
      end
      if s.ttl > 0 then redis.call('PEXPIRE', s.key, s.ttl) end
    elseif reserve then
      s.R = add(s.R, s.A)
      redis.call('HINCRBY', s.key, 'r', s.amt_s)
      if s.ttl > 0 then redis.call('PEXPIRE', s.key, s.ttl) end
      redis.call('HSET', KEYS[n + 1], s.key, s.amt_s)
    end
  elseif s.kind == 'wf' then
    if not dry and s.code >= 1 and s.code <= 5 then
      -- terminated for good, whatever else the check decided
      redis.call('HSET', s.key, 't', s.code)
      redis.call('PEXPIRE', s.key, s.ttl)
    elseif consume then
      s.calls = s.calls + 1
      redis.call('HINCRBY', s.key, 'n', 1)
      redis.call('HINCRBY', s.key, s.dupf, 1)
      if not s.first then redis.call('HSET', s.key, 'f', now); redis.call('PEXPIRE', s.key, s.ttl) end
      if s.amt ~= 0 and string.find(s.fl, 'k', 1, true) then
        s.spent = s.spent + s.amt
        redis.call('HINCRBY', s.key, 'c', I(s.amt))
      end
    end
  elseif s.kind == 'b' then
    if s.init then redis.call('HSET', s.key, 'b', S(s.B), 'r', 0, 'm', S(s.M)) end
    if consume and s.amt ~= 0 then
      s.B = add(s.B, neg(s.A))
      redis.call('HINCRBY', s.key, 'b', S(neg(s.A)))
    elseif reserve and s.amt ~= 0 then
      s.R = add(s.R, s.A)
      redis.call('HINCRBY', s.key, 'r', s.amt_s)
      redis.call('HSET', KEYS[n + 1], s.key, s.amt_s)
    end
  elseif s.kind == 'tb' then
    if consume then
      s.l = s.l + s.amt
      redis.call('HSET', s.key, 'l', I(s.l), 'ts', I(s.ts))
      -- once drained the key is not needed: a missing bucket is an empty one
      redis.call('PEXPIRE', s.key, math.ceil(s.l * s.win / s.rate) + 1000)
    end
  elseif s.kind == 'sl' then
    if consume then
      -- unique member: within one ms the entry count only grows (older entries left already)
      local m = now .. ':' .. (#s.entries / 2) .. ':' .. s.amt
      redis.call('ZADD', s.key, now, m)
      redis.call('PEXPIRE', s.key, s.win + 1000)
      s.used = s.used + s.amt
      s.entries[#s.entries + 1] = m
      s.entries[#s.entries + 1] = tostring(now)
    end
  else
    if s.reset then redis.call('DEL', s.key) end
    if consume or #s.drop > 0 or s.reset then
      if #s.drop > 0 then redis.call('HDEL', s.key, unpack(s.drop)) end
      local total = (s.reset and 0 or s.total)
      if consume then
        total = total + s.amt
        redis.call('HINCRBY', s.key, 'b' .. s.idx, I(s.amt))
        s.used = s.used + s.amt
      end
      redis.call('HSET', s.key, 't', I(total), 'o', s.idx - SUB)
      redis.call('PEXPIRE', s.key, s.win * 2 + 1000)
    end
  end
end

if reserving then
  redis.call('PEXPIRE', KEYS[n + 1], tonumber(ARGV[3]) - now + 86400000)
  redis.call('HSET', KEYS[n + 1], '_customer', ARGV[5])
  redis.call('ZADD', KEYS[n + 2], ARGV[3], ARGV[4])
  redis.call('HSET', KEYS[n + 3], ARGV[4], ARGV[5])
  redis.call('SADD', KEYS[n + 4], ARGV[7 + n * 6])
end

local r = {apply and 1 or (deny and 0 or 1)}
for i = 1, n do
  local s = st[i]
  local fits = s.fits and 1 or 0
  if s.kind == 'q' then
    r[#r + 1] = fits; r[#r + 1] = S(s.U); r[#r + 1] = S(s.R); r[#r + 1] = 0
  elseif s.kind == 'wf' then
    r[#r + 1] = fits; r[#r + 1] = s.code; r[#r + 1] = s.calls; r[#r + 1] = s.spent
  elseif s.kind == 'b' then
    r[#r + 1] = fits; r[#r + 1] = S(s.B); r[#r + 1] = S(s.R); r[#r + 1] = S(s.M)
  elseif s.kind == 'tb' then
    local full = math.ceil(s.l * s.win / s.rate)
    local retry = -1
    if not s.fits and s.amt <= s.limit then retry = math.ceil((s.l + s.amt - s.limit) * s.win / s.rate) end
    r[#r + 1] = fits; r[#r + 1] = s.limit - s.l; r[#r + 1] = full; r[#r + 1] = retry
  elseif s.kind == 'sl' then
    -- when the oldest entries leave the window, and when enough have left for this amount
    local reset, retry, acc = 0, -1, s.used
    for j = 1, #s.entries, 2 do
      local t = tonumber(s.entries[j + 1])
      if reset == 0 then reset = t + s.win - now end
      if not s.fits and retry < 0 then
        acc = acc - tonumber(string.match(s.entries[j], ':(%d+)$'))
        if acc + s.amt <= s.limit then retry = t + s.win - now end
      end
    end
    if not s.fits and s.amt > s.limit then retry = -1 end
    r[#r + 1] = fits; r[#r + 1] = s.used; r[#r + 1] = reset; r[#r + 1] = retry
  else
    -- when enough of the oldest sub-buckets have left the window for this amount to fit
    local retry = -1
    if not s.fits and s.amt <= s.limit then
      local need, freed = s.used + s.amt - s.limit, 0
      for j = s.idx - SUB, s.idx do
        freed = freed + tonumber(redis.call('HGET', s.key, 'b' .. j) or '0')
        if freed >= need then
          retry = math.ceil((j + 1) * s.b + s.win - now)
          break
        end
      end
      if retry < 0 then retry = s.win end
    end
    r[#r + 1] = fits; r[#r + 1] = s.used; r[#r + 1] = s.win; r[#r + 1] = retry
  end
end
return r
