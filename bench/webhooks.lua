-- webhooks.lua: POST /v1/webhook_endpoints/<id>/test (a "ping": one outbox event
-- and one delivery each) at a fixed overall rate, whatever the connections'
-- latency, as long as each answers within connections / rate seconds.
-- Environment, besides common.lua's:
--   TG_BENCH_ENDPOINT  the webhook endpoint id (required)
--   TG_BENCH_RATE      requests/s, over every connection (default 500)
--   TG_BENCH_THREADS   wrk's -t, if not 1 (the rate is shared among threads)
-- Requests are sent on a fixed schedule (one every 1/rate s, handed out in
-- turn to whichever connection is free) through wrk's delay(). A schedule
-- that fell more than 1 s behind restarts from now, so a stall is not
-- followed by an unbounded burst.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } tg_bench_timespec;
int clock_gettime(int clk, tg_bench_timespec *tp);
]])
local ts = ffi.new("tg_bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
	ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
	return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local endpoint = os.getenv("TG_BENCH_ENDPOINT") or ""
local rate = tonumber(os.getenv("TG_BENCH_RATE") or "500")

wrk.method = "POST"
wrk.path = "/v1/webhook_endpoints/" .. endpoint .. "/test"
wrk.headers["Content-Type"] = nil -- no body

-- The rate is over all of wrk's threads; scripts/bench runs wrk with -t1.
local nthreads = tonumber(os.getenv("TG_BENCH_THREADS") or "1")
local interval = 1000 * nthreads / rate -- ms between two requests of this thread
local next_at -- when this thread's next request is due (ms, monotonic)

function delay()
	local now = now_ms()
	if not next_at or next_at < now - 1000 then
		next_at = now
	end
	local d = next_at - now
	next_at = next_at + interval
	return math.floor(d)
end
