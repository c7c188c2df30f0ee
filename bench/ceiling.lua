-- ceiling.lua: POST a fixed ~200-byte JSON body (the shape of a full check
-- request) to the ceiling server (bench/ceiling.c).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/"
wrk.body = '{"customer_id":"u_2817","meter":"tokens","amount":1200,'
	.. '"dimensions":{"model":"gpt-4","feature":"chat"},"ip":"203.0.113.9",'
	.. '"consume":false,'
	.. '"workflow":{"id":"wf_1","tool":"web_search","args_hash":"9f2c"}}'
