-- usage.lua: add committed usage to the live counters, after the event writer's COMMIT.
-- KEYS[i]: counter keys. ARGV[1] now_ms, ARGV[2] n, then 5 per counter: type, amount, p1, p2, agg.
--   q  (quota)        p1 = ttl ms: only if the key exists (a missing one is rebuilt from the rollups,
--                     which already hold this usage); agg s(um) / m(ax) / l(atest), or l:<ms> with the
--                     value's instant (kept in "t": a value of an earlier instant does not replace it)
--   tb (token bucket) p1 = capacity, p2 = "refill per window:window ms"; the level may pass the capacity (debt)
--   sl / sw           p1 = window ms
--   b  (balance)      amount added to the balance (negative: a priced debit), only if the key exists;
--                     ba / br: a consuming check's debit after its commit / failed commit, as qa / qr
--   w  (workflow)     priced cost recorded under a workflow id (kept a day when the workflow is unknown)
--   qi (quota init)   set a lost counter to its rebuilt value (amount) if it is still missing, with a new
--                     rebuild mark "e"; p1 = ttl ms, p2 = what active reservations hold on it
--   qa / qr           a consuming check's usage, after its commit (qa: add it again when the counter's
--                     mark is no longer p1, i.e. a rebuild lost it) or after its failed commit (qr: take it
--                     back when the mark is still p1); agg as for q
--   bi (balance init) set a lost balance if still missing: amount = balance, p1 = minimum, p2 = held
-- Then the holds to let go (reservations settled, released or expired): ARGV[3+5n] their count r, then r
-- amounts; their keys follow the counters' in KEYS. A hold goes only where the key exists (a missing key is
-- rebuilt from PostgreSQL, where the reservation is gone already), and "r" never goes below 0.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind, amt, p1, p2, agg = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local key = KEYS[i]
  local marked = kind == 'qa' or kind == 'qr' or kind == 'ba' or kind == 'br'
  local mark = marked and tonumber(redis.call('HGET', key, 'e') or '0')
  if marked and (kind == 'qa' or kind == 'ba') == (mark == tonumber(p1)) then
    -- qa/ba: the usage is still there; qr/br: a rebuild already left it out
  elseif kind == 'qr' and (agg == 'm' or string.byte(agg) == 108) then
    -- a max or latest value cannot be taken back: the counter goes, rebuilt from the rollups (which do
    -- not have the failed check's value); it used to be set to minus the amount
    redis.call('DEL', key)
  elseif kind == 'q' or kind == 'qa' or kind == 'qr' then
    if redis.call('EXISTS', key) == 1 then
      if agg == 'm' then
        local u = redis.call('HGET', key, 'u') or '0'
        if cmp(N(ARGV[b + 2]), N(u)) > 0 then redis.call('HSET', key, 'u', ARGV[b + 2]) end
      elseif string.byte(agg) == 108 then -- 'l' or 'l:<ms>'
        -- the latest: unless the counter holds a value of a later instant (an event sent late)
        local at = tonumber(string.sub(agg, 3))
        local t = at and tonumber(redis.call('HGET', key, 't') or '')
        if at and not (t and at < t) then redis.call('HSET', key, 'u', ARGV[b + 2], 't', at)
        elseif not at then redis.call('HSET', key, 'u', ARGV[b + 2]) end
      else
        incr_usage(key, 'u', ARGV[b + 2])
      end
    end
  elseif kind == 'b' or kind == 'ba' or kind == 'br' then
    if redis.call('EXISTS', key) == 1 then redis.call('HINCRBY', key, 'b', ARGV[b + 2]) end
  elseif kind == 'qi' then
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'u', ARGV[b + 2], 'r', p2 ~= '' and p2 or 0, 'e', new_mark())
      local at = string.byte(agg) == 108 and tonumber(string.sub(agg, 3))
      if at then redis.call('HSET', key, 't', at) end -- a latest value's instant
      if tonumber(p1) > 0 then redis.call('PEXPIRE', key, tonumber(p1)) end
    end
  elseif kind == 'bi' then
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'b', ARGV[b + 2], 'r', p2 ~= '' and p2 or 0, 'm', p1, 'e', new_mark())
    end
  elseif kind == 'w' then
    redis.call('HINCRBY', key, 'c', I(amt))
    if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, 86400000) end
  elseif kind == 'tb' then
    -- the same state as check.lua's (tb_state, in the prelude)
    local rate, win = string.match(p2, '^(%d+):(%d+)$')
    rate, win = tonumber(rate), tonumber(win)
    local l, ts, exp = tb_state(key, now, rate, win)
    l = l + amt
    local drained, pushed = now + math.ceil(l * win / rate), false
    if drained + 1000 > exp then exp, pushed = drained + win + 1000, true end
    redis.call('HSET', key, 's', struct.pack('<i8i8i8', l, ts, exp))
    if pushed then redis.call('PEXPIRE', key, exp - now) end
  elseif kind == 'sl' then
    local w = tonumber(p1)
    local c = redis.call('ZCOUNT', key, now, now)
    redis.call('ZADD', key, now, now .. ':u' .. c .. ':' .. amt)
    redis.call('PEXPIRE', key, w + 1000)
  else
    local w = tonumber(p1)
    local idx = math.floor(now / (w / 100))
    redis.call('HINCRBY', key, 'b' .. idx, I(amt))
    redis.call('HINCRBY', key, 't', I(amt))
    redis.call('HSET', key, 'l', idx)
    if not redis.call('HGET', key, 'o') then redis.call('HSET', key, 'o', idx - 100) end
    redis.call('PEXPIRE', key, w * 2 + 1000)
  end
end
-- holds let go
local r = tonumber(ARGV[3 + n * 5] or '0')
for j = 1, r do
  local key = KEYS[n + j]
  if redis.call('EXISTS', key) == 1 then
    local left = redis.call('HINCRBY', key, 'r', '-' .. ARGV[3 + n * 5 + j])
    if left < 0 then redis.call('HSET', key, 'r', 0) end
  end
end
return n
