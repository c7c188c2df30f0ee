-- check.lua: POST /v1/check for a random customer (or TG_BENCH_CUSTOMER).
-- Environment, besides common.lua's:
--   TG_BENCH_METER     meter to check (omitted: the built-in "requests")
--   TG_BENCH_AMOUNT    amount (default 1; only sent with a meter)
--   TG_BENCH_CONSUME   1: "consume": true
--   TG_BENCH_WORKFLOW  1: a workflow per customer, a new args_hash per call
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local tail = ""
local meter = os.getenv("TG_BENCH_METER")
if meter and meter ~= "" then
	tail = string.format(',"meter":"%s","amount":%s', meter, os.getenv("TG_BENCH_AMOUNT") or "1")
end
if os.getenv("TG_BENCH_CONSUME") == "1" then
	tail = tail .. ',"consume":true'
end
local workflow = os.getenv("TG_BENCH_WORKFLOW") == "1"

wrk.method = "POST"
wrk.path = "/v1/check"

function request()
	local c = bench.customer()
	local wf = ""
	if workflow then
		wf = string.format(',"workflow":{"id":"wf-%s-%s","tool":"web_search","args_hash":"%s","depth":1}',
			bench.run, c, bench.uid())
	end
	return wrk.format(nil, nil, nil, '{"customer_id":"' .. c .. '"' .. tail .. wf .. "}")
end
