-- One script for every scenario, chosen by environment variables:
--   BENCH_IDS   file of user ids, one per line     BENCH_HOT   use only N ids
--   BENCH_HOT_FROM  skip this many ids first (a hot set of its own)
--   BENCH_WRITE_PERCENT  share of POST /users/{id}/orders (0 = reads only, 100 = writes only)
--   BENCH_TOKEN bearer token for writes
--   BENCH_STATUSES=1  count answers by status (slows wrk a little: the soak uses it)
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local hot = tonumber(os.getenv("BENCH_HOT") or "0")
local hot_from = tonumber(os.getenv("BENCH_HOT_FROM") or "0")
local ids = common.load_ids(os.getenv("BENCH_IDS"), hot > 0 and hot or nil, hot_from)
local write_percent = tonumber(os.getenv("BENCH_WRITE_PERCENT") or "0")
local token = os.getenv("BENCH_TOKEN") or ""
local order = '{"amount": 1999, "currency": "EUR", "items": [{"sku": "BENCH-1", "quantity": 2}]}'
local write_headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}

local threads = {}

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
  table.insert(threads, thread)
end

statuses = {}
if os.getenv("BENCH_STATUSES") == "1" then
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function init(args)
  math.randomseed(seed)
end

function request()
  local id = ids[math.random(1, #ids)]
  if math.random(1, 100) <= write_percent then
    return wrk.format("POST", "/users/" .. id .. "/orders", write_headers, order)
  end
  return wrk.format("GET", "/users/" .. id)
end

function done(summary, latency, requests)
  local counted = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counted[status] = (counted[status] or 0) + n
    end
  end
  common.report(summary, latency, counted)
end
