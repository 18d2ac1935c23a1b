-- Dispatch: many items through Python in batches, a bounded number in flight.
--
--   slither scripts/dispatch.lua
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
local pool = assert(slither.pool.start{ size = 2, path = { here .. "/../pyworkers/examples" } })

local records = {}
for i = 1, 10000 do
  records[i] = { id = i, text = string.rep("word ", i % 17) }
end
records[4242].text = slither.null -- one poison pill

-- Fixed batches, input order kept; a failing batch is split until the bad record
-- stands alone ("isolate"), so only that one fails.
local t0 = slither.now()
local results, report = slither.dispatch.run(records, {
  module = "dispatch_ops", ["function"] = "score", batch_size = 128, on_error = "isolate" })
print(string.format("scored %d records in %.0f ms (%d batches, %d failed: record %d, %s)",
  report.items_ok, slither.now() - t0, report.batches, report.items_failed,
  report.failed[1].item.payload.id, report.failed[1].error.message))
print(string.format("first result: id %d score %.3f", results[1].payload.id,
  results[1].payload.score))

-- Weighted batches: long texts count more, so each batch holds similar work.
local _, wrep = slither.dispatch.run(records, {
  module = "dispatch_ops", ["function"] = "score", strategy = "weighted", max_weight = 2000,
  weight_fn = function(item)
    return type(item.payload.text) == "string" and #item.payload.text or 1
  end, on_error = "skip" })
print(string.format("weighted: %d batches, %d ok, %d skipped", wrep.batches, wrep.items_ok,
  wrep.items_failed))

-- A stream over an iterator: input is pulled only as batches finish, and with
-- "as_completed" results arrive as soon as their batch does.
local n = 0
local source = function()
  n = n + 1
  if n <= 200 then return n end
end
local stream = slither.dispatch.stream(source, {
  module = "dispatch_ops", ["function"] = "slow_square", batch_size = 10, max_in_flight = 4,
  ordering = "as_completed" })
local first, count, sum = nil, 0, 0
for item in stream.next do
  first = first or item.payload
  count = count + 1
  sum = sum + item.payload
end
print(string.format("stream: %d results, sum of squares %d, first to arrive %d", count, sum,
  first))
