-- events.lua: POST /v1/events with unique event ids for random customers.
-- TG_BENCH_BATCH: 0 sends one bare event per request, N a {"events": [N]} batch.
-- Counts the "accepted" numbers of 200 responses, so that a server rejecting
-- the events cannot look fast.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local batch = tonumber(os.getenv("TG_BENCH_BATCH") or "0")

wrk.method = "POST"
wrk.path = "/v1/events"

local function event()
	return string.format('{"id":"%s","customer_id":"%s","type":"llm.completion",'
		.. '"properties":{"tokens":10,"model":"gpt-4"}}', bench.uid(), bench.customer())
end

function request()
	local body
	if batch == 0 then
		body = event()
	else
		local t = {}
		for i = 1, batch do
			t[i] = event()
		end
		body = '{"events":[' .. table.concat(t, ",") .. "]}"
	end
	return wrk.format(nil, nil, nil, body)
end

bench.on_body = function(status, body)
	if status == 200 then
		local n = tonumber(body:match('"accepted"%s*:%s*(%d+)') or "0")
		extra.accepted = (extra.accepted or 0) + n
	end
end
