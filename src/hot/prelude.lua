-- prelude.lua: put before every script by scripts.c: exact integer arithmetic for quantities.
-- integers go to Redis as plain digits: Lua would write 1e+17, which HINCRBY refuses
local function I(x) return string.format('%.0f', x) end

-- Quotas and balances are compared exactly, not as doubles. A value is a Lua number while that is exact
-- (at most 15 digits, and sums of a few of them stay below 2^53), else {hi, lo} = hi * 1e9 + lo with
-- 0 <= lo < 1e9, read from the decimal strings Redis and the arguments hold (exact up to 9e18).
-- The common case, every value a number, costs no table and no string work; the {hi, lo} operations are
-- made on first use (each function made costs every script run that makes it).
local E, SAFE = 1e9, 4e15
local Wd
local function wd()
  if Wd then return Wd end
  Wd = {}
  function Wd.of(s)
    if type(s) == 'table' then return s end
    if type(s) == 'number' then
      -- a plain number is below 2^53: its split is exact without going through its digits
      local hi = math.floor(s / E)
      local lo = s - hi * E
      -- s / E may round to the next integer (2999999999999999 / 1e9): one step back
      if lo < 0 then hi, lo = hi - 1, lo + E elseif lo >= E then hi, lo = hi + 1, lo - E end
      return {hi, lo}
    end
    local neg = string.byte(s, 1) == 45
    if neg then s = string.sub(s, 2) end
    local n, hi, lo = #s
    if n <= 9 then hi, lo = 0, tonumber(s) else hi, lo = tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8)) end
    if neg then hi, lo = -hi, -lo end
    local c = math.floor(lo / E)
    return {hi + c, lo - c * E}
  end
  function Wd.small(a)
    -- back to a number when that is exact
    if a[1] < 4e6 and a[1] > -4e6 then return a[1] * E + a[2] end
    return a
  end
  function Wd.add(a, b)
    a, b = Wd.of(a), Wd.of(b)
    local lo = a[2] + b[2]
    local c = math.floor(lo / E)
    return Wd.small({a[1] + b[1] + c, lo - c * E})
  end
  function Wd.neg(a)
    local c = math.floor(-a[2] / E)
    return {-a[1] + c, -a[2] - c * E}
  end
  function Wd.cmp(a, b)
    a, b = Wd.of(a), Wd.of(b)
    if a[1] ~= b[1] then return a[1] < b[1] and -1 or 1 end
    if a[2] ~= b[2] then return a[2] < b[2] and -1 or 1 end
    return 0
  end
  function Wd.str(a)
    if a[1] == 0 then return I(a[2]) end
    if a[1] > 0 then return I(a[1]) .. string.format('%09d', a[2]) end
    local p = Wd.neg(a)
    if p[1] == 0 then return '-' .. I(p[2]) end
    return '-' .. I(p[1]) .. string.format('%09d', p[2])
  end
  return Wd
end
-- A rebuilt counter's mark: the server's clock in microseconds, new at each rebuild of a key.
local function new_mark()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function N(s)
  local n = #s
  if n <= 15 then return tonumber(s) end
  if n <= 17 then
    -- 16 digits (and a sign) may still be below SAFE: a plain integer string that short reads exactly
    local v = tonumber(s)
    if v and v < SAFE and v > -SAFE then return v end
  end
  return wd().of(s)
end
local function add(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local r = a + b
    if r < SAFE and r > -SAFE then return r end
  end
  return wd().add(a, b)
end
local function neg(a)
  if type(a) == 'number' then return -a end
  return wd().neg(a)
end
local function cmp(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    if a == b then return 0 end
    return a < b and -1 or 1
  end
  return wd().cmp(a, b)
end
-- as decimal digits (for HINCRBY and HSET)
local function S(a)
  if type(a) == 'number' then return I(a) end
  return wd().str(a)
end
-- as a command argument: Redis writes a number argument with %.17g, exact digits below 1e15
local function D(a)
  if type(a) == 'number' and a < 1e15 and a > -1e15 then return a end
  return S(a)
end
-- for a reply: a number becomes an integer reply as it is, a wide value its digits
local function O(a)
  if type(a) == 'number' then return a end
  return wd().str(a)
end
-- A quota's usage stops at the largest quantity, 9e12 units less a micro-unit (the server's TG_FIXED_MAX,
-- what it reads a larger sum from PostgreSQL as): past 9.2e12 HINCRBY fails on int64 overflow, and a counter
-- left below its real usage would let a quota through.
local UMAXS = '8999999999999999999'
local function incr_usage(key, field, amt)
  local r = redis.pcall('HINCRBY', key, field, amt)
  if type(r) ~= 'number' or r > 8.999999999999999e18 then redis.call('HSET', key, field, UMAXS) end
end
-- A token bucket's level (what is used), drained at rate per win ms up to now, with when it was last
-- drained and until when the key is kept: its hash field s = pack(i8 level, i8 at ms, i8 kept until ms).
local function tb_state(key, now, rate, win)
  local l, ts, exp = 0, now, 0
  local packed = redis.call('HGET', key, 's')
  if packed then
    l, ts, exp = struct.unpack('<i8i8i8', packed)
    if now > ts then
      local d = (now - ts) * rate / win -- > 0: d - d % 1 is math.floor(d) without a C call
      l = l - (d - d % 1)
      if l < 0 then l = 0 end
      ts = now
    end
  end
  return l, ts, exp
end
