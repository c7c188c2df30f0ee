-- check.lua: every check of one batch (the checks of one pass of a loop), each one testing every counter it
-- touches, then consuming all or nothing. Each check is independent of the others of its batch: its own
-- clock, counters, decision and reply; one that fails (a script error) fails alone.
-- This runs inside Redis for every check, so every operation counts: Redis pays ~10k instructions per
-- EVALSHA (one per batch, not per check), ~1k per script argument and Lua ~2k per tonumber(), so all
-- arguments come in one binary ARGV[1] read with struct.unpack (little-endian; i4 = int32, i8 = int64,
-- B = byte, s = NUL-terminated string), and each counter's state is one table built by one constructor.
-- KEYS: every check's counter keys, one after the other. A reservation's holds are the amounts added to
-- the "r" (reserved) of its quota counters and live balance; PostgreSQL keeps the reservation itself (see
-- 0006_reservations.sql).
-- ARGV[1]: per check, i4 the length of what follows, then i8 now_ms, B flags (1 dry run, 2 reserve, 4 journal),
-- B n (its number of counters, one key each), [i8 wall-clock ms, with flag 4]; then per counter B kind, B flags,
-- and by kind:
--   1 quota          i8 i8 limit, i8 i8 amount, i8 ttl ms (0: none), B rebuilt?, [i8 i8 rebuilt value,
--                    i8 i8 rebuilt reserved]
--   2 token bucket   i8 capacity, i8 amount, i8 refill amount per window, i8 window ms. The state is the
--                    bucket's level (what is used) draining at the refill rate, so a limit raised or lowered
--                    applies to the level as it stands: field s = pack(i8 level, i8 at ms, i8 kept until ms)
--   3 sliding log    i8 limit, i8 amount, i8 window ms
--   4 sliding window (100 sub-buckets) i8 limit, i8 amount, i8 window ms
--   5 workflow guard i8 priced cost, i8 max calls, i8 max depth, i8 max duration ms, i8 max duplicates,
--                    i8 max cost (0 = none), i8 depth, s "tool|args_hash" ("" without both); a tripped guard terminates the
--                    workflow for good (later calls: code 10 + the guard); flag 32 adds the cost to its spend.
--                    The workflow's hash: s = pack(i8 calls, i8 first call ms, i8 guard that terminated it or 0),
--                    c = its priced spend (usage.lua adds events' costs there), d:<tool|args_hash> = repeats
--                    (builds before 2026-11-22 kept n, f and t instead of s: read when s is missing)
--   6 balance gate   i8 i8 priced cost, B rebuilt?, [i8 i8 balance, i8 i8 minimum, i8 i8 reserved]; fits while available
--                    (balance - reserved) is above the minimum and stays at or above it after the cost
-- "i8 i8" is an exact value hi * 1e9 + lo (0 <= lo < 1e9): quotas and balances are compared exactly.
-- Counter flags, a sum of: 1 consume when allowed, 2 reserve when allowed, 4 enforced (hard); 8 / 16: the
-- quota's meter keeps the maximum / the latest value (usage is that value, not a sum); 32 (wf) record cost;
-- 64 journal: PostgreSQL records this counter's change after the check, so until then the key is noted in
-- this instance's journal (a sorted set, the check's last key, scored by the wall clock: see hot/journal.c).
-- If the instance dies before its commit, a survivor drops the key and it is rebuilt without the change.
-- Amounts are integers in micro-units. Returns a table with one reply per check: its decision (see the end
-- of one()), status 1 allowed (and applied) or 0 denied (nothing applied), then per counter fits and three
-- values (a token bucket: its level after this check, 0, 0; the server derives the rest from the limit it
-- sent); or, when counters are missing, the table {-1, their indexes}; or an error.
local U, byte = struct.unpack, string.byte
local blob = ARGV[1]
-- the check being run: its clock, and the index of its first key in KEYS minus one
local now, kb
-- the check's journal key and wall clock, when it has counters flagged 64 (nil otherwise)
local J, wall
local SUB = 100

local function P(hi, lo)
  -- a number below SAFE: a sum of two stays exact, and add() goes wide past SAFE
  if hi < 4e6 and hi > -4e6 then return hi * E + lo end
  wd() -- from now on values may be wide (see Wd in the prelude)
  return {hi, lo}
end
-- Wd == nil: every value a plain number (no wide one made yet in this run), the common case, where the
-- quota test and the reply skip the generic helpers (a Lua call costs ~500 instructions and a type() ~700).
-- The reply's struct.pack format for n counters (and a balance mark), made once per run; the reply's values
-- and the counters' states each go in one table for every check of the run (a table grown element by
-- element costs ~800 instructions each).
local RFMT, RV, ST = {}, {}, {}
local function rfmt(n, mark)
  local k = n * 2 + (mark and 1 or 0)
  local fmt = RFMT[k]
  if not fmt then
    fmt = '<b' .. string.rep('Bi8i8i8', n) .. (mark and 'i8' or '')
    RFMT[k] = fmt
  end
  return fmt
end

local function sw_state(key, win)
  local b = win / SUB
  local idx = math.floor(now / b)
  local v = redis.call('HMGET', key, 't', 'o', 'l')
  local total, oldest = tonumber(v[1]) or 0, tonumber(v[2]) or idx
  local drop = {}
  if idx - oldest > 2 * SUB then
    return 0, idx, {}, true
  end
  -- l: the newest sub-bucket written (kept since 2026-11-23; without it, "full again" is a window away)
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
  return est, idx, drop, false, total, ec, b, tonumber(v[3])
end


-- The reply is one string (a Lua table costs Redis far more to turn into a reply): b status, then per
-- counter B fits and three values a, b, c as i8 each. A quota or balance beyond 4e15 micro-units is kept
-- as {hi, lo}: then the reply is the table {status, then per counter fits, a, b, c as digits} instead.
-- the values reported for one counter
-- (a quota's and a token bucket's are made inline, where the reply is built)
local function values(s)
  local kind = s.kind
  local a, b, c = 0, 0, 0
  if kind == 6 then
    a, b, c = s.B, s.R, s.M
  elseif kind == 3 then
    -- when the newest entry leaves the window (empty again), and when enough have left for this amount
    local reset, retry, acc = 0, -1, s.used
    if #s.entries > 0 then reset = tonumber(s.entries[#s.entries]) + s.win - now end
    for j = 1, #s.entries, 2 do
      local t = tonumber(s.entries[j + 1])
      if not s.fits and retry < 0 then
        acc = acc - tonumber(string.match(s.entries[j], ':(%d+)$'))
        if acc + s.amt <= s.limit then retry = t + s.win - now end
      end
    end
    if not s.fits and s.amt > s.limit then retry = -1 end
    a, b, c = s.used, reset, retry
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
    -- empty again once the newest sub-bucket written leaves the window
    local reset = s.used <= 0 and 0 or (s.last and math.ceil((s.last + 1) * s.b + s.win - now) or s.win)
    a, b, c = s.used, reset, retry
  end
  return a, b, c
end

-- One check: its reply (see the end), or the table {-1, indexes} of its missing counters.
local function one(gflags, n, pos)
  local dry = gflags % 2 == 1
  local st = ST -- slots 1..n are this check's
  local missing
  local deny = false
  for i = 1, n do
    local kind, f = byte(blob, pos)
    local key = KEYS[kb + i]
    local s
    if kind == 1 then
      local lh, ll, ah, al, ttl, has, ih, il, rh, rl
      f, lh, ll, ah, al, ttl, has, pos = U('<Bi8i8i8i8i8B', blob, pos + 1)
      if has == 1 then ih, il, rh, rl, pos = U('<i8i8i8i8', blob, pos) end
      local iat -- a latest meter's rebuilt value: its instant
      if has == 1 and f % 32 >= 16 then iat, pos = U('<i8', blob, pos) end
      -- P() inlined for the usual value below 4e15
      local A = ah < 4e6 and ah > -4e6 and ah * E + al or P(ah, al)
      local L = lh < 4e6 and lh > -4e6 and lh * E + ll or P(lh, ll)
      local v
      if f % 2 == 1 then v = redis.call('HMGET', key, 'u', 'r', 'e') else v = redis.call('HMGET', key, 'u', 'r') end
      local u, r, init, mark
      local vu, vr = v[1], v[2]
      if not vu and not vr then
        if has == 1 then init = true; u, r = P(ih, il), P(rh, rl)
        else missing = missing or {}; missing[#missing + 1] = i end
      else
        -- N() inlined for the usual short value (arithmetic reads a numeral as tonumber() does, without a
        -- function call: 1,000 instructions fewer each)
        u = vu and (#vu <= 15 and vu + 0 or N(vu)) or 0
        r = vr and (#vr <= 15 and vr + 0 or N(vr)) or 0
        if v[3] then mark = tonumber(v[3]) end
      end
      local fits
      if u then
        if f % 64 < 8 and Wd == nil then
          -- a sum, every value a number below SAFE (4e15): u + r is exact; the last sum may round only far
          -- above L (< SAFE), and rounding keeps order, so the comparison is exact
          fits = u + r + A <= L
        elseif f % 16 >= 8 then fits = cmp(add(cmp(u, A) >= 0 and u or A, r), L) <= 0 -- the maximum
        elseif f % 32 >= 16 then fits = cmp(add(A, r), L) <= 0 -- the latest
        else fits = cmp(add(add(u, r), A), L) <= 0 end
      end
      -- fields are few (a table costs ~400 instructions per field): the rest is added when needed
      s = {kind = 1, f = f, fits = fits, A = A, U = u, R = r, mark = mark}
      if init then s.init = true; s.ttl = ttl; s.iat = iat end
    elseif kind == 2 then
      local limit, amt, rate, win
      f, limit, amt, rate, win, pos = U('<Bi8i8i8i8', blob, pos + 1)
      local l, ts, exp = tb_state(key, now, rate, win)
      s = {kind = 2, f = f, fits = l + amt <= limit, amt = amt, rate = rate, win = win, l = l, ts = ts, exp = exp}
    elseif kind == 3 then
      local limit, amt, win
      f, limit, amt, win, pos = U('<Bi8i8i8', blob, pos + 1)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
      local es = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local used = 0
      for j = 1, #es, 2 do
        used = used + tonumber(string.match(es[j], ':(%d+)$'))
      end
      s = {kind = 3, f = f, fits = used + amt <= limit, limit = limit, amt = amt, win = win, used = used,
           entries = es}
    elseif kind == 5 then
      local amt, mc, md, mdur, mdup, mcost, depth, tool
      f, amt, mc, md, mdur, mdup, mcost, depth, tool, pos = U('<Bi8i8i8i8i8i8i8s', blob, pos + 1)
      if tool == '' then mdup = 0 end -- no (tool, args_hash): not a repeat of anything
      local dupf = 'd:' .. tool
      local v = redis.call('HMGET', key, 's', 'c', dupf)
      local calls, first, term = 0, nil, 0
      if v[1] then calls, first, term = U('<i8i8i8', v[1])
      else
        -- new here, or kept by a build from before the packed field (n, f, t: read once, written packed below)
        local o = redis.call('HMGET', key, 'n', 'f', 't')
        -- (a workflow terminated on its first call had t only)
        if o[1] or o[3] then calls, first, term = tonumber(o[1]) or 0, tonumber(o[2]), tonumber(o[3]) or 0 end
      end
      local spent, dups = v[2] and tonumber(v[2]) or 0, v[3] and tonumber(v[3]) or 0
      local code = 0
      if term > 0 then code = 10 + term
      elseif mc > 0 and calls + 1 > mc then code = 1
      elseif mdup > 0 and dups + 1 > mdup then code = 2
      elseif md > 0 and depth > md then code = 3
      elseif mdur > 0 and first and now - first > mdur then code = 4
      elseif mcost > 0 and spent + amt > mcost then code = 5
      end
      -- ttl: the workflow's expiry once written, twice its duration and at least a minute (no C call)
      s = {kind = 5, f = f, fits = code == 0, amt = amt, dupf = dupf, calls = calls, dups = dups, first = first,
           spent = spent, code = code, ttl = mdur < 30000 and 60000 or 2 * mdur}
    elseif kind == 6 then
      local ah, al, has, bh, bl, mh, ml, rh, rl
      f, ah, al, has, pos = U('<Bi8i8B', blob, pos + 1)
      if has == 1 then bh, bl, mh, ml, rh, rl, pos = U('<i8i8i8i8i8i8', blob, pos) end
      local v = redis.call('HMGET', key, 'b', 'r', 'm', 'e')
      local B, R, M, init, mark
      if not v[1] then
        if has == 1 then init = true; B, R, M = P(bh, bl), P(rh, rl), P(mh, ml)
        else missing = missing or {}; missing[#missing + 1] = i end
      else
        B, R, M, mark = N(v[1]), N(v[2] or '0'), N(v[3] or '0'), tonumber(v[4] or '0')
      end
      local A, fits = P(ah, al), nil
      if B then
        local avail = add(B, neg(R))
        fits = cmp(avail, M) > 0 and cmp(add(avail, neg(A)), M) >= 0
      end
      s = {kind = 6, f = f, fits = fits, A = A, B = B, R = R, M = M, init = init, mark = mark}
    else -- 4 sliding window
      local limit, amt, win
      f, limit, amt, win, pos = U('<Bi8i8i8', blob, pos + 1)
      local used, idx, drop, reset, total, ec, b, last = sw_state(key, win)
      s = {kind = 4, key = key, f = f, fits = used + amt <= limit, limit = limit, amt = amt, win = win, used = used,
           idx = idx, drop = drop, reset = reset, total = total, ec = ec, b = b or win / SUB, last = not reset and last or nil}
    end
    if s.fits == false and f % 8 >= 4 then deny = true end
    st[i] = s
  end

  if missing then
    local r = {-1}
    for k, i in ipairs(missing) do r[k + 1] = i end
    return r
  end

  local apply = not deny and not dry
  local reserving = apply and gflags % 4 >= 2
  for i = 1, n do
    local s, key = st[i], KEYS[kb + i]
    local kind = s.kind
    local consume = apply and s.f % 2 >= 1
    local reserve = reserving and s.f % 4 >= 2
    if kind == 1 then
      if s.init then
        s.mark = new_mark()
        redis.call('HSET', key, 'u', S(s.U), 'r', S(s.R), 'e', s.mark)
        if s.iat and s.iat > 0 then redis.call('HSET', key, 't', s.iat) end
        if s.ttl > 0 then redis.call('PEXPIRE', key, s.ttl) end
      end
      -- the key exists with its expiry (set when it was made): updating it keeps that
      if consume then
        if s.f % 16 >= 8 then -- the maximum
          if cmp(s.A, s.U) > 0 then s.U = s.A; redis.call('HSET', key, 'u', D(s.A)) end
        elseif s.f % 32 >= 16 then -- the latest, as of now (t: its instant, against events sent late)
          s.U = s.A
          redis.call('HSET', key, 'u', D(s.A), 't', now)
        else
          s.U = add(s.U, s.A)
          incr_usage(key, 'u', D(s.A))
          -- (only past a soft limit can it go beyond the largest quantity, and then it is wide)
          if Wd ~= nil and cmp(s.U, N(UMAXS)) > 0 then s.U = N(UMAXS) end
        end
      elseif reserve then
        s.R = add(s.R, s.A)
        redis.call('HINCRBY', key, 'r', D(s.A))
      end
    elseif kind == 2 then
      if consume then
        s.l = s.l + s.amt
        -- once drained the key is not needed (a missing bucket is an empty one): it is kept until then
        -- and a window more, so that its expiry is pushed back about once per window, not on every check
        local q = s.l * s.win / s.rate -- >= 0; rounded up without math.ceil (a C call costs ~500 instructions)
        local drained = now + (q - q % 1) + (q % 1 > 0 and 1 or 0)
        if drained + 1000 > s.exp then
          s.exp = drained + s.win + 1000
          redis.call('HSET', key, 's', struct.pack('<i8i8i8', s.l, s.ts, s.exp))
          redis.call('PEXPIRE', key, s.exp - now)
        else
          redis.call('HSET', key, 's', struct.pack('<i8i8i8', s.l, s.ts, s.exp))
        end
      end
    elseif kind == 5 then
      if not dry and s.code >= 1 and s.code <= 5 then
        -- terminated for good, whatever else the check decided
        redis.call('HSET', key, 's', struct.pack('<i8i8i8', s.calls, s.first or now, s.code))
        redis.call('PEXPIRE', key, s.ttl)
      elseif consume then
        -- one HSET of the new values (read above, in this same atomic run) instead of an HINCRBY each
        s.calls = s.calls + 1
        local cost = s.amt ~= 0 and s.f % 64 >= 32
        local st = struct.pack('<i8i8i8', s.calls, s.first or now, 0)
        if cost then
          s.spent = s.spent + s.amt
          redis.call('HSET', key, 's', st, s.dupf, s.dups + 1, 'c', I(s.spent))
        else redis.call('HSET', key, 's', st, s.dupf, s.dups + 1) end
        if not s.first then redis.call('PEXPIRE', key, s.ttl) end
      end
    elseif kind == 6 then
      if s.init then
        s.mark = new_mark()
        redis.call('HSET', key, 'b', S(s.B), 'r', S(s.R), 'm', S(s.M), 'e', s.mark)
      end
      if consume and cmp(s.A, 0) ~= 0 then
        s.B = add(s.B, neg(s.A))
        redis.call('HINCRBY', key, 'b', D(neg(s.A)))
      elseif reserve and cmp(s.A, 0) ~= 0 then
        s.R = add(s.R, s.A)
        redis.call('HINCRBY', key, 'r', D(s.A))
      end
    elseif kind == 3 then
      if consume then
        -- unique member: within one ms the entry count only grows (older entries left already)
        local m = now .. ':' .. (#s.entries / 2) .. ':' .. s.amt
        redis.call('ZADD', key, now, m)
        redis.call('PEXPIRE', key, s.win + 1000)
        s.used = s.used + s.amt
        s.entries[#s.entries + 1] = m
        s.entries[#s.entries + 1] = tostring(now)
      end
    else
      if s.reset then redis.call('DEL', key) end
      if consume or #s.drop > 0 or s.reset then
        if #s.drop > 0 then redis.call('HDEL', key, unpack(s.drop)) end
        local total = (s.reset and 0 or s.total)
        if consume then
          total = total + s.amt
          redis.call('HINCRBY', key, 'b' .. s.idx, I(s.amt))
          s.used = s.used + s.amt
          s.last = s.idx
        end
        if s.last then redis.call('HSET', key, 't', I(total), 'o', s.idx - SUB, 'l', s.last)
        else redis.call('HSET', key, 't', I(total), 'o', s.idx - SUB) end
        redis.call('PEXPIRE', key, s.win * 2 + 1000)
      end
    end
    -- flag 64 (only quotas and balances carry it): the moved key goes in the journal, in this same run
    if s.f >= 64 and (consume or reserve) then redis.call('ZADD', J, wall, key) end
  end

  local status = apply and 1 or (deny and 0 or 1)
  -- a balance (always the last entry) adds its rebuild mark at the very end
  local last = st[n]
  local bal = last and last.kind == 6
  -- every value in one table; one struct.pack of them all, unless one is wide (possible only once a wide
  -- value was made in this run): then the reply is the table with that value as digits
  local rv, k, wide = RV, 1, false
  local check = Wd ~= nil
  rv[1] = status
  for i = 1, n do
    local s = st[i]
    local kind, a, b, c = s.kind
    -- the usual kinds inline: a token bucket sends its level only, the server derives the rest
    -- (a quota's mark is read only when it is consumed: the server needs it then only)
    if kind == 1 then a, b, c = s.U, s.R, s.mark or 0
    elseif kind == 2 then a, b, c = s.l, 0, 0
    elseif kind == 5 then a, b, c = s.code, s.calls, s.spent
    else a, b, c = values(s) end
    if check and (type(a) == 'table' or type(b) == 'table' or type(c) == 'table') then wide = true end
    rv[k + 1], rv[k + 2], rv[k + 3], rv[k + 4] = s.fits and 1 or 0, a, b, c
    k = k + 4
  end
  if bal then rv[k + 1] = last.mark or 0; k = k + 1 end
  if not wide then return struct.pack(rfmt(n, bal), unpack(rv, 1, k)) end
  local r = {status}
  for j = 2, 1 + 4 * n do r[j] = j % 4 == 2 and rv[j] or O(rv[j]) end
  if bal then r[k] = rv[k] end
  return r
end

local replies, pos, len, gflags, n = {}, 1
kb = 0
while pos <= #blob do
  len, now, gflags, n = U('<i4i8BB', blob, pos)
  local at = pos + 14
  J = nil
  if gflags >= 4 then J, wall, at = KEYS[kb + n + 1], U('<i8', blob, at) end
  local ok, r = pcall(one, gflags, n, at)
  if not ok then r = {err = type(r) == 'table' and r.err or tostring(r)} end
  replies[#replies + 1] = r
  pos = pos + 4 + len
  kb = kb + n + (J and 1 or 0)
end
return replies
