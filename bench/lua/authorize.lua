-- GET /api/internal/authorize (forward-auth) with X-Service-Auth and Authorization: Bearer
-- <access jwt>, as a gateway sends it, cycling through the seeded access tokens
-- ($DATA_DIR/access.txt). Requests are pre-built in init().
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup
done = common.done

local reqs = {}
local i = 0
init = function(args)
  local dir = os.getenv("DATA_DIR") or "data"
  local secret = assert(os.getenv("INTERNAL_SECRET"), "INTERNAL_SECRET unset")
  for k, tok in ipairs(common.lines(dir .. "/access.txt")) do
    reqs[k] = wrk.format("GET", "/api/internal/authorize", {
      ["X-Service-Auth"] = secret,
      ["Authorization"] = "Bearer " .. tok,
    })
  end
  i = (tid * 7919) % #reqs
end

request = function()
  i = i % #reqs + 1
  return reqs[i]
end
