-- POST /auth/refresh {"refresh_token": …} (native client). Every use rotates the token, so
-- each thread keeps a pool of live refresh tokens ($REFRESH_IN, split between threads): a
-- request takes one out, and its response puts the successor back. A token is thus used
-- exactly once, by one connection, and the pool must hold more tokens than the thread has
-- connections (run.sh checks). At the end the tokens still in the pools are written to
-- $REFRESH_OUT for the next run; those in flight when wrk stops are lost (their sessions
-- stay valid, they are just not used again).
package.path = (os.getenv("LUA_DIR") or "./lua") .. "/?.lua;" .. package.path
local common = require("common")
setup = common.setup

local headers = { ["Content-Type"] = "application/json" }
pool = {}
local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")

init = function(args)
  local k = 0
  for _, tok in ipairs(common.lines(assert(os.getenv("REFRESH_IN"), "REFRESH_IN unset"))) do
    if k % nthreads == tid then pool[#pool + 1] = tok end
    k = k + 1
  end
end

request = function()
  local tok = table.remove(pool)
  if not tok then
    -- Pool exhausted (should not happen): an unknown token, answered 401 and counted.
    tok = "starved"
  end
  return wrk.format("POST", "/auth/refresh", headers,
    string.format('{"refresh_token":"%s"}', tok))
end

response = function(status, headers, body)
  if status == 200 then
    local tok = string.match(body, '"refresh_token":"([^"]+)"')
    if tok then pool[#pool + 1] = tok end
  end
end

done = function(summary, latency, requests)
  local out = os.getenv("REFRESH_OUT")
  local left = 0
  if out then left = common.write_thread_tokens("pool", out) end
  common.done(summary, latency, requests, { refresh_tokens_left = left })
end
