-- GET / (the bare axum ceiling, examples/bare_ok.rs): the same client work as the token
-- scripts (one pre-built request), nothing else.
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup
done = common.done

local req
init = function(args)
  req = wrk.format("GET", "/")
end

request = function()
  return req
end
