-- healthz.lua: GET /healthz, the floor of Tollgate's HTTP layer.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/healthz"
wrk.headers["Content-Type"] = nil
