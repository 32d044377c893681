-- Shared helpers for the wrk scripts (adapted from ../shared/peers/better-auth/lua/common.lua,
-- so both sides print and record the same figures): per-thread ids, file reading, and a
-- JSON summary line per run with p50/p95/p99 (wrk's own table has no p95).
local M = {}

local threads = {}
-- wrk calls setup(thread) once per thread in the main Lua state.
function M.setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function M.threads() return threads end

-- Reads a file into an array of non-empty lines.
function M.lines(path)
  local t = {}
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  for l in f:lines() do if #l > 0 then t[#t + 1] = l end end
  f:close()
  return t
end

-- wrk calls done() once at the end (main state): prints a SUMMARY line and appends one
-- JSON line to $BENCH_JSON. `extra` (optional) is a table of additional numeric fields.
function M.done(summary, latency, requests, extra)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local r = {
    label = os.getenv("BENCH_LABEL") or "",
    requests = summary.requests,
    duration_s = secs,
    rps = summary.requests / secs,
    bytes = summary.bytes,
    lat_mean_ms = latency.mean / 1000,
    lat_p50_ms = latency:percentile(50) / 1000,
    lat_p90_ms = latency:percentile(90) / 1000,
    lat_p95_ms = latency:percentile(95) / 1000,
    lat_p99_ms = latency:percentile(99) / 1000,
    lat_max_ms = latency.max / 1000,
    err_connect = e.connect, err_read = e.read, err_write = e.write,
    err_timeout = e.timeout, non_2xx_3xx = e.status,
  }
  local keys = {"label", "requests", "duration_s", "rps", "bytes", "lat_mean_ms", "lat_p50_ms",
    "lat_p90_ms", "lat_p95_ms", "lat_p99_ms", "lat_max_ms", "err_connect", "err_read",
    "err_write", "err_timeout", "non_2xx_3xx"}
  for k, v in pairs(extra or {}) do r[k] = v; keys[#keys + 1] = k end
  local parts = {}
  for _, k in ipairs(keys) do
    local v = r[k]
    if type(v) == "string" then parts[#parts + 1] = string.format('"%s":"%s"', k, v)
    elseif math.floor(v) == v then parts[#parts + 1] = string.format('"%s":%d', k, v)
    else parts[#parts + 1] = string.format('"%s":%.3f', k, v) end
  end
  local line = "{" .. table.concat(parts, ",") .. "}"
  io.write(string.format("SUMMARY %s rps=%.1f p50=%.2fms p95=%.2fms p99=%.2fms errors(c/r/w/t)=%d/%d/%d/%d non2xx3xx=%d\n",
    r.label, r.rps, r.lat_p50_ms, r.lat_p95_ms, r.lat_p99_ms, e.connect, e.read, e.write, e.timeout, e.status))
  local out = os.getenv("BENCH_JSON")
  if out then
    local f = assert(io.open(out, "a"))
    f:write(line, "\n")
    f:close()
  end
end

-- Collects a per-thread table of refresh tokens (thread:get copies tables between Lua
-- states) and writes them, one per line, to `path`. Returns how many were written.
function M.write_thread_tokens(name, path)
  local f = assert(io.open(path, "w"))
  local n = 0
  for _, thread in ipairs(threads) do
    local t = thread:get(name)
    if type(t) == "table" then
      for _, tok in ipairs(t) do f:write(tok, "\n"); n = n + 1 end
    end
  end
  f:close()
  return n
end

return M
