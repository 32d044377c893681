-- POST /auth/register (native client) with a unique email per request:
--   r-<RUN_ID>-t<thread id>-<per-thread counter>@bench.servauth.test
-- With HARVEST_OUT set, the refresh tokens of the new sessions are written there at the end.
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup

local run_id = os.getenv("RUN_ID") or tostring(os.time())
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
harvest = {}

request = function()
  counter = counter + 1
  local body = string.format(
    '{"email":"r-%s-t%d-%d@bench.servauth.test","password":"correct horse battery staple","client":"native"}',
    run_id, tid, counter)
  return wrk.format("POST", "/auth/register", headers, body)
end

if os.getenv("HARVEST_OUT") then
  response = function(status, headers, body)
    if status == 201 then
      local tok = string.match(body, '"refresh_token":"([^"]+)"')
      if tok then harvest[#harvest + 1] = tok end
    end
  end
end

done = function(summary, latency, requests)
  local out = os.getenv("HARVEST_OUT")
  if out then common.write_thread_tokens("harvest", out) end
  common.done(summary, latency, requests)
end
