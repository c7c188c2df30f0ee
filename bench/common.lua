-- common.lua: shared by the wrk scripts of scripts/bench (wrk 4, LuaJIT).
-- Each scenario script loads it first. It reads its settings from the
-- environment (set by scripts/bench):
--   TG_BENCH_KEY        API key sent as "Authorization: Bearer ..." (optional)
--   TG_BENCH_RUN        a random prefix, new for every wrk run (unique ids)
--   TG_BENCH_CUSTOMERS  customers u_0 .. u_<N-1> picked at random (default 10000)
--   TG_BENCH_CUSTOMER   one fixed customer id instead (the abuse scenario)
-- It counts every response by status and, in done(), prints "TGBENCH ..."
-- lines that scripts/bench parses; wrk's own report is printed as usual.

bench = {
	run = os.getenv("TG_BENCH_RUN") or tostring(os.time()),
	customers = tonumber(os.getenv("TG_BENCH_CUSTOMERS") or "10000"),
	fixed_customer = os.getenv("TG_BENCH_CUSTOMER"),
	seq = 0,
}

wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("TG_BENCH_KEY")
if key and key ~= "" then
	wrk.headers["Authorization"] = "Bearer " .. key
end

-- A customer id: the fixed one, or a random one of u_0 .. u_<N-1>.
function bench.customer()
	return bench.fixed_customer or ("u_" .. math.random(0, bench.customers - 1))
end

-- An id unique across runs (prefix), threads (tid) and requests (counter).
function bench.uid()
	bench.seq = bench.seq + 1
	return bench.run .. "-" .. tid .. "-" .. bench.seq
end

-- Optional per-response hook of a scenario: bench.on_body(status, body).
bench.on_body = nil

local threads = {}

function setup(thread)
	threads[#threads + 1] = thread
	thread:set("tid", #threads)
end

function init(args)
	counts = {} -- responses by status (read by done() through thread:get)
	extra = {} -- scenario counters, e.g. accepted events
	math.randomseed(os.time() * 1000 + tid * 7919)
end

function response(status, headers, body)
	counts[status] = (counts[status] or 0) + 1
	if bench.on_body then
		bench.on_body(status, body)
	end
end

function done(summary, latency, requests)
	local statuses, extras = {}, {}
	for _, t in ipairs(threads) do
		for s, n in pairs(t:get("counts") or {}) do
			statuses[s] = (statuses[s] or 0) + n
		end
		for k, n in pairs(t:get("extra") or {}) do
			extras[k] = (extras[k] or 0) + n
		end
	end
	local e = summary.errors
	io.write(string.format("TGBENCH requests %d\n", summary.requests))
	io.write(string.format("TGBENCH duration_us %d\n", summary.duration))
	io.write(string.format("TGBENCH mean_us %d\n", latency.mean))
	for _, p in ipairs({ 50, 99, 99.9 }) do
		io.write(string.format("TGBENCH p%s_us %d\n", p, latency:percentile(p)))
	end
	-- os.clock() is this process's CPU time (every thread): is wrk the bottleneck?
	io.write(string.format("TGBENCH cpu_s %.3f\n", os.clock()))
	io.write(string.format("TGBENCH errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
	for s, n in pairs(statuses) do
		io.write(string.format("TGBENCH status %d %d\n", s, n))
	end
	for k, n in pairs(extras) do
		io.write(string.format("TGBENCH extra %s %d\n", k, n))
	end
end
