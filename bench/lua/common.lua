-- Shared by every scenario: load ids (`limit` of them after the first `skip`), and report
-- the results as one JSON line.
local M = {}

function M.load_ids(path, limit, skip)
  local ids = {}
  local seen = 0
  for line in io.lines(path) do
    seen = seen + 1
    if seen > (skip or 0) then
      ids[#ids + 1] = line
      if limit and #ids >= limit then break end
    end
  end
  return ids
end

function M.report(summary, latency, statuses)
  local errors = summary.errors
  local counted = {}
  for status, n in pairs(statuses or {}) do
    counted[#counted + 1] = string.format('"%d": %d', status, n)
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    table.concat(counted, ", ")))
end

return M
