-- prelude.lua: put before every script by scripts.c: exact integer arithmetic for quantities.
-- integers go to Redis as plain digits: Lua would write 1e+17, which HINCRBY refuses
local function I(x) return string.format('%.0f', x) end

-- Quotas and balances are compared exactly, not as doubles: a value is {hi, lo} = hi * 1e9 + lo with
-- 0 <= lo < 1e9, read from the decimal strings Redis and the arguments hold (exact up to 9e18).
local E = 1e9
local function N(s)
  if type(s) == 'number' then s = I(s) end
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local n, hi, lo = #s
  if n <= 9 then hi, lo = 0, tonumber(s) else hi, lo = tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8)) end
  if neg then hi, lo = -hi, -lo end
  local c = math.floor(lo / E)
  return {hi + c, lo - c * E}
end
local function add(a, b) local lo = a[2] + b[2]; local c = math.floor(lo / E); return {a[1] + b[1] + c, lo - c * E} end
local function neg(a) local c = math.floor(-a[2] / E); return {-a[1] + c, -a[2] - c * E} end
local function cmp(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] and -1 or 1 end
  if a[2] ~= b[2] then return a[2] < b[2] and -1 or 1 end
  return 0
end
local function S(a)
  if a[1] == 0 then return I(a[2]) end
  if a[1] > 0 then return I(a[1]) .. string.format('%09d', a[2]) end
  local p = neg(a)
  if p[1] == 0 then return '-' .. I(p[2]) end
  return '-' .. I(p[1]) .. string.format('%09d', p[2])
end
