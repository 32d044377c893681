-- POST /auth/login (native client), cycling through the seeded users ($DATA_DIR/emails.txt,
-- password 'correct horse battery staple'). Each thread starts at a different offset.
-- With HARVEST_OUT set, the refresh token of every successful login is kept and written
-- there at the end: the sessions it opens feed the /auth/refresh rows.
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup

local reqs = {}
local i = 0
harvest = {}
init = function(args)
  local dir = os.getenv("DATA_DIR") or "data"
  local headers = { ["Content-Type"] = "application/json" }
  for k, email in ipairs(common.lines(dir .. "/emails.txt")) do
    reqs[k] = wrk.format("POST", "/auth/login", headers, string.format(
      '{"email":"%s","password":"correct horse battery staple","client":"native"}', email))
  end
  i = (tid * 7919) % #reqs
end

request = function()
  i = i % #reqs + 1
  return reqs[i]
end

if os.getenv("HARVEST_OUT") then
  response = function(status, headers, body)
    if status == 200 then
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
