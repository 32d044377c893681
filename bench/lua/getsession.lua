-- GET /api/auth/get-session (the Better Auth face) with a valid session, cycling through
-- $DATA_DIR/face-cookies.txt (Cookie header) or, with AUTH_MODE=bearer,
-- $DATA_DIR/face-tokens.txt (Authorization: Bearer), both written by face_seed.py from
-- sign-in/email answers. The same client work as the peer's lua/getsession.lua: requests
-- pre-built in init(), no response() callback.
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup
done = common.done

local reqs = {}
local i = 0
init = function(args)
  local dir = os.getenv("DATA_DIR") or "data"
  local mode = os.getenv("AUTH_MODE") or "cookie"
  local file = dir .. (mode == "bearer" and "/face-tokens.txt" or "/face-cookies.txt")
  for k, v in ipairs(common.lines(file)) do
    local h
    if mode == "bearer" then h = { ["Authorization"] = "Bearer " .. v }
    else h = { ["Cookie"] = v } end
    reqs[k] = wrk.format("GET", "/api/auth/get-session", h)
  end
  i = (tid * 7919) % #reqs
end

request = function()
  i = i % #reqs + 1
  return reqs[i]
end
